"""How many real spans one received span stands for, from OpenTelemetry consistent probability sampling.

A sampler that keeps a fraction p of traces writes its rejection threshold into the span's W3C tracestate,
`ot=th:<hex>` (OpenTelemetry's "TraceState: Probability Sampling"): the trace was kept because its 56-bit
randomness was at least T, so every kept span stands for 2**56 / (2**56 - T) spans. The model counts a span
that many times, so request rates, error counts and edge rates stay right when production samples traces;
latency quantiles are unbiased either way. Spans without a threshold (unsampled feeds, other samplers) count
once, as before.

Counts in the model's sketches are whole numbers, so a fractional adjusted count (3.33 at p = 0.3) is
rounded up or down with probability given by its fraction, using the span id's low bits as the coin: the sum
stays unbiased and the result is deterministic for the same spans.
"""

from __future__ import annotations

import math
from functools import lru_cache

from opentelemetry.trace import TraceState

MAX_THRESHOLD = 1 << 56
THRESHOLD_HEX_DIGITS = 14
OT_KEY = "ot"
THRESHOLD_FIELD = "th"


@lru_cache(maxsize=256)
def adjusted_count(trace_state: str) -> float:
    """The adjusted count a span with this tracestate carries: 1.0 without a usable `ot=th:` threshold."""
    if "th:" not in trace_state:
        return 1.0
    # The W3C list parser of the OpenTelemetry API; it yields an empty state for a malformed header.
    ot_value = TraceState.from_header([trace_state]).get(OT_KEY)
    if not ot_value:
        return 1.0
    for field in ot_value.split(";"):
        name, _, value = field.partition(":")
        if name == THRESHOLD_FIELD:
            return threshold_adjusted_count(value)
    return 1.0


def threshold_adjusted_count(hex_threshold: str) -> float:
    """2**56 / (2**56 - T) for a `th` value (1 to 14 hex digits, trailing zeros omitted); 1.0 if invalid."""
    if not 1 <= len(hex_threshold) <= THRESHOLD_HEX_DIGITS:
        return 1.0
    try:
        threshold = int(hex_threshold.ljust(THRESHOLD_HEX_DIGITS, "0"), 16)
    except ValueError:
        return 1.0
    return MAX_THRESHOLD / (MAX_THRESHOLD - threshold)


def threshold_for(probability: float) -> str:
    """The `th` value a sampler keeping `probability` of traces writes (the inverse of the above)."""
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"sampling probability must be in (0, 1], got {probability}")
    threshold = MAX_THRESHOLD - round(probability * MAX_THRESHOLD)  # (1 - p) * 2**56 rounds worse
    if threshold == 0:
        return "0"
    return f"{threshold:014x}".rstrip("0")


def span_weight(count: float, span_id: bytes) -> int:
    """`count` as a whole number of spans: rounded up with probability equal to its fraction."""
    whole = math.floor(count)
    fraction = count - whole
    if fraction < 1e-9:
        return whole
    if fraction > 1.0 - 1e-9:
        return whole + 1
    coin = int.from_bytes(span_id[-4:], "big") / 4294967296.0
    return whole + (coin < fraction)
