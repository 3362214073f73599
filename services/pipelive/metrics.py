"""Serving metrics under vLLM's Prometheus names, so dashboards and autoscalers written for vLLM read them.

Names, types and label (`model_name`) follow a running vLLM v0.10 V1 engine (see
shared/data/vllm-metrics/). `EngineMetrics` is the engine's narrow interface; `PrometheusMetrics` is the
one that exports, into a registry of its own so several servers can live in one process (tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_REQUEST_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class EngineMetrics:
    """What the engine reports; this base class drops everything (engines without a server)."""

    def step(
        self,
        *,
        running: int,
        waiting: int,
        kv_usage: float,
        prompt_tokens: int,
        generation_tokens: int,
        preemptions: int,
    ) -> None:
        return None

    def first_token(self, seconds: float) -> None:
        return None

    def inter_token(self, seconds: float) -> None:
        return None

    def finished(
        self,
        *,
        reason: str,
        e2e: float,
        queue: float,
        prefill: float,
        decode: float,
        prompt_tokens: int,
        generation_tokens: int,
        max_tokens: int,
    ) -> None:
        return None


class PrometheusMetrics(EngineMetrics):
    """vLLM's series: gauges of the queue and KV usage, token counters, latency histograms."""

    def __init__(
        self, model_name: str, cache_config: dict[str, str], registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.labels = {"model_name": model_name}
        names = ["model_name"]
        r = self.registry

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, names, registry=r)

        def counter(name: str, text: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, text, [*names, *extra], registry=r)

        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, names, buckets=buckets, registry=r)

        self.running = gauge("vllm:num_requests_running", "Number of requests currently running on GPU")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage")
        self.gpu_cache_usage = gauge(
            "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage"
        )
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemptions from the engine")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed")
        self.success = counter(
            "vllm:request_success", "Count of successfully processed requests", ("finished_reason",)
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            _LATENCY_BUCKETS,
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds",
            _LATENCY_BUCKETS,
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds",
            _LATENCY_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end-to-end request latency in seconds",
            _REQUEST_BUCKETS,
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request",
            _REQUEST_BUCKETS,
        )
        self.inference_time = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request",
            _REQUEST_BUCKETS,
        )
        self.prefill_time = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request",
            _REQUEST_BUCKETS,
        )
        self.decode_time = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request",
            _REQUEST_BUCKETS,
        )
        self.iteration_tokens = histogram(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step", _TOKEN_BUCKETS
        )
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed", _TOKEN_BUCKETS
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed", _TOKEN_BUCKETS
        )
        self.request_max_tokens = histogram(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter", _TOKEN_BUCKETS
        )
        self.request_max_generation = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens",
            _TOKEN_BUCKETS,
        )
        self.request_n = histogram(
            "vllm:request_params_n", "Histogram of the n request parameter", (1, 2, 5, 10, 20)
        )
        info = Info("vllm:cache_config", "Information of the LLMEngine CacheConfig", registry=r)
        info.info(cache_config)
        for series in (self.running, self.waiting, self.kv_usage, self.gpu_cache_usage):
            series.labels(**self.labels).set(0)
        for series in (self.preemptions, self.prompt_tokens, self.generation_tokens):
            series.labels(**self.labels)

    def step(
        self,
        *,
        running: int,
        waiting: int,
        kv_usage: float,
        prompt_tokens: int,
        generation_tokens: int,
        preemptions: int,
    ) -> None:
        labels = self.labels
        self.running.labels(**labels).set(running)
        self.waiting.labels(**labels).set(waiting)
        self.kv_usage.labels(**labels).set(kv_usage)
        self.gpu_cache_usage.labels(**labels).set(kv_usage)
        if prompt_tokens:
            self.prompt_tokens.labels(**labels).inc(prompt_tokens)
        if generation_tokens:
            self.generation_tokens.labels(**labels).inc(generation_tokens)
        if preemptions:
            self.preemptions.labels(**labels).inc(preemptions)
        if prompt_tokens + generation_tokens:
            self.iteration_tokens.labels(**labels).observe(prompt_tokens + generation_tokens)

    def first_token(self, seconds: float) -> None:
        self.ttft.labels(**self.labels).observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self.itl.labels(**self.labels).observe(seconds)
        self.tpot.labels(**self.labels).observe(seconds)

    def finished(
        self,
        *,
        reason: str,
        e2e: float,
        queue: float,
        prefill: float,
        decode: float,
        prompt_tokens: int,
        generation_tokens: int,
        max_tokens: int,
    ) -> None:
        labels = self.labels
        if reason in ("stop", "length"):
            self.success.labels(finished_reason=reason, **labels).inc()
        self.e2e.labels(**labels).observe(e2e)
        self.queue_time.labels(**labels).observe(queue)
        self.inference_time.labels(**labels).observe(prefill + decode)
        self.prefill_time.labels(**labels).observe(prefill)
        self.decode_time.labels(**labels).observe(decode)
        self.request_prompt_tokens.labels(**labels).observe(prompt_tokens)
        self.request_generation_tokens.labels(**labels).observe(generation_tokens)
        self.request_max_tokens.labels(**labels).observe(max_tokens)
        self.request_max_generation.labels(**labels).observe(max_tokens)
        self.request_n.labels(**labels).observe(1)
