"""top_k and top_p sampling: which tokens stay, top_k=1 is greedy, a seeded sample is reproducible."""

import math

import pytest
import torch

from services.pipelive.engine import LLMEngine
from services.pipelive.params import InvalidRequest, Limits, SamplingParams, validate
from services.pipelive.reference import DenseReference
from services.pipelive.sampling import allowed_logits, sample_token
from tests.services.pipelive.support import PROMPTS, TINY, engine_config

# probabilities 0.4, 0.3, 0.2, 0.1, listed out of order so that the sort matters
PROBABILITIES = [0.2, 0.4, 0.1, 0.3]
LOGITS = torch.tensor([math.log(p) for p in PROBABILITIES], dtype=torch.float64)


def kept(top_k: int, top_p: float) -> set[int]:
    return {i for i, value in enumerate(allowed_logits(LOGITS, top_k, top_p).tolist()) if value > -math.inf}


@pytest.mark.parametrize(
    ("top_k", "top_p", "expected"),
    [
        (0, 1.0, {0, 1, 2, 3}),
        (-1, 1.0, {0, 1, 2, 3}),
        (9, 1.0, {0, 1, 2, 3}),  # more than the vocabulary: all
        (1, 1.0, {1}),
        (2, 1.0, {1, 3}),
        (0, 0.35, {1}),  # the most likely token alone reaches 0.35
        (0, 0.5, {1, 3}),
        (0, 0.75, {0, 1, 3}),
        (0, 1e-9, {1}),  # the most likely token always stays
        (3, 0.5, {1, 3}),
        (2, 0.95, {1, 3}),
    ],
)
def test_top_k_and_top_p_keep_the_most_likely_tokens(top_k: int, top_p: float, expected: set[int]) -> None:
    assert kept(top_k, top_p) == expected


def test_samples_come_only_from_the_kept_tokens_in_proportion() -> None:
    generator = torch.Generator().manual_seed(11)
    params = SamplingParams(temperature=1.0, top_k=3)
    draws = [sample_token(LOGITS, params, generator) for _ in range(3000)]
    assert set(draws) == {0, 1, 3}
    # renormalised over the kept 0.9: 0.4 / 0.9 = 0.444, 0.3 / 0.9 = 0.333, 0.2 / 0.9 = 0.222
    for token, share in ((1, 0.444), (3, 0.333), (0, 0.222)):
        assert abs(draws.count(token) / len(draws) - share) < 0.04


def test_top_k_one_and_a_tiny_top_p_are_greedy_and_seeds_reproduce() -> None:
    greedy = [DenseReference(TINY).generate([prompt], 12)[0] for prompt in PROMPTS[:3]]
    with LLMEngine(TINY, engine_config(num_stages=2)) as engine:

        def run(**settings: float) -> list[list[int]]:
            return [
                engine.generate([prompt], SamplingParams(max_tokens=12, **settings))[0]
                for prompt in PROMPTS[:3]
            ]

        assert run(temperature=1.5, top_k=1, seed=1) == greedy
        assert run(temperature=1.5, top_p=1e-9, seed=2) == greedy
        nucleus = run(temperature=1.2, top_p=0.9, top_k=40, seed=5)
        assert nucleus == run(temperature=1.2, top_p=0.9, top_k=40, seed=5)
        assert nucleus != greedy  # it does sample
        assert nucleus != run(temperature=1.2, top_p=0.9, top_k=40, seed=6)


LIMITS = Limits("m", vocab_size=256, max_model_len=512, max_request_blocks=64, block_size=16)


@pytest.mark.parametrize(
    ("top_p", "top_k", "field"),
    [
        (0, None, "top_p"),
        (1.5, None, "top_p"),
        ("0.5", None, "top_p"),
        (True, None, "top_p"),
        (None, -2, "top_k"),
    ]
    + [(None, 2.5, "top_k"), (None, True, "top_k"), (None, "3", "top_k")],
)
def test_out_of_range_top_p_and_top_k_name_the_field(top_p: object, top_k: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate(LIMITS, [1, 2], 4, 1.0, None, None, top_p, top_k)  # type: ignore[arg-type]
    assert raised.value.field == field
    assert field in str(raised.value)


def test_defaults_and_disabled_values() -> None:
    assert validate(LIMITS, [1], 4, None, None).top_p == 1.0
    assert validate(LIMITS, [1], 4, None, None, top_k=-1).top_k == 0
    params = validate(LIMITS, [1], 4, 0.7, None, 3, 0.9, 20)
    assert (params.top_p, params.top_k, params.seed) == (0.9, 20, 3)
