"""Request parameters and their validation, shared by the HTTP and gRPC front ends."""

from __future__ import annotations

from dataclasses import dataclass


class InvalidRequest(ValueError):
    """Bad input from a client: `field` names the offending parameter; the message says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens: greedy when temperature is 0 (the default), else sampling with an optional seed,
    restricted to the top_k most likely tokens (0: all) and to the top_p probability mass (1: all)."""

    max_tokens: int = 16
    temperature: float = 0.0
    seed: int | None = None
    ignore_eos: bool = False
    top_p: float = 1.0
    top_k: int = 0


@dataclass(frozen=True)
class Limits:
    """What the engine accepts."""

    model_name: str
    vocab_size: int
    max_model_len: int
    max_request_blocks: int  # a request needing more KV blocks than the whole pool could never run
    block_size: int


def validate(
    limits: Limits,
    prompt_token_ids: list[int],
    max_tokens: int | None,
    temperature: float | None,
    model: str | None,
    seed: int | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
) -> SamplingParams:
    """Check one request against the limits; raise InvalidRequest naming the field at fault."""
    if model and model != limits.model_name:
        raise InvalidRequest(
            "model", f"the model `{model}` does not exist; this server serves `{limits.model_name}`"
        )
    if not prompt_token_ids:
        raise InvalidRequest("prompt", "prompt is empty")
    bad = [t for t in prompt_token_ids if not 0 <= t < limits.vocab_size]
    if bad:
        raise InvalidRequest(
            "prompt", f"token id {bad[0]} is outside the vocabulary [0, {limits.vocab_size})"
        )
    if max_tokens is None:
        max_tokens = 16
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens", f"max_tokens must be a positive integer, not {max_tokens!r}")
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise InvalidRequest("temperature", f"temperature must be between 0 and 2, not {temperature!r}")
    prompt_len = len(prompt_token_ids)
    if prompt_len >= limits.max_model_len:
        raise InvalidRequest(
            "prompt",
            f"the prompt has {prompt_len} tokens; "
            f"this model's maximum context length is {limits.max_model_len}",
        )
    if prompt_len + max_tokens > limits.max_model_len:
        raise InvalidRequest(
            "max_tokens",
            f"max_tokens is {max_tokens} and the prompt has {prompt_len} tokens: together they exceed the "
            f"maximum context length {limits.max_model_len} (at most {limits.max_model_len - prompt_len})",
        )
    blocks = -(-(prompt_len + max_tokens) // limits.block_size)
    if blocks > limits.max_request_blocks:
        raise InvalidRequest(
            "max_tokens",
            f"prompt plus max_tokens need {blocks} KV blocks, "
            f"more than the whole KV pool ({limits.max_request_blocks})",
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("seed", f"seed must be an integer, not {seed!r}")
    if top_p is None:
        top_p = 1.0
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise InvalidRequest("top_p", f"top_p must be in (0, 1], not {top_p!r}")
    if top_k is None:
        top_k = 0
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < -1:
        raise InvalidRequest(
            "top_k", f"top_k must be -1 or 0 (all tokens) or a positive integer, not {top_k!r}"
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=float(temperature),
        seed=seed,
        top_p=float(top_p),
        top_k=max(top_k, 0),
    )
