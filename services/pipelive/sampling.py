"""Picking the next token from a request's logits: temperature, vLLM's top_k and OpenAI's top_p.

Greedy (temperature 0) takes the argmax and ignores top_k and top_p, as vLLM does. Otherwise the logits
are divided by the temperature, restricted to the top_k most likely tokens, then to the smallest set of
most likely tokens whose probability reaches top_p, and one token is drawn from what is left with the
request's own seeded generator, so a seeded request is reproducible.
"""

from __future__ import annotations

import torch

from services.pipelive.params import SamplingParams


def allowed_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """`logits` (1-D) with every token outside the top_k / top_p set at -inf; top_k <= 0 and top_p >= 1
    leave them all."""
    logits = logits.clone()
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        probabilities, order = torch.sort(torch.softmax(logits, dim=-1), descending=True)
        # drop a token when the tokens before it already reach top_p; the most likely one always stays
        before = torch.cumsum(probabilities, dim=-1) - probabilities
        dropped = order[before >= top_p]
        logits[dropped] = float("-inf")
    return logits


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """The next token for one request from its last position's logits."""
    if params.temperature == 0 or generator is None:
        return int(torch.argmax(logits))
    scaled = logits.double() / params.temperature
    probabilities = torch.softmax(allowed_logits(scaled, params.top_k, params.top_p), dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))
