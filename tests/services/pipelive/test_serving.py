"""The HTTP (OpenAI-compatible) and gRPC front ends on loopback: streams, bad input, disconnects, metrics."""

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protos.pipelive.v1 import pipelive_pb2 as pb
from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc
from services.pipelive.reference import DenseReference
from tests.services.pipelive.support import TINY, RunningPipeLive, engine_config, running_pipelive
from tests.support import SHARED_DATA


@pytest.fixture(scope="module")
def server() -> Iterator[RunningPipeLive]:
    with running_pipelive(config=engine_config(num_stages=2, initial_kv_blocks=160)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningPipeLive) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def stub(server: RunningPipeLive) -> pb_grpc.PipeLiveStub:
    return pb_grpc.PipeLiveStub(grpc.insecure_channel(server.grpc_target))


def post(server: RunningPipeLive, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.base_url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until_idle(stub: pb_grpc.PipeLiveStub, timeout: float = 10.0) -> pb.StatusResponse:
    deadline = time.monotonic() + timeout
    while True:
        status = stub.Status(pb.StatusRequest(), timeout=5)
        if (
            status.kv_blocks_used == 0
            and status.num_requests_running == 0
            and status.num_requests_waiting == 0
        ):
            return status
        assert time.monotonic() < deadline, f"still busy: {status}"
        time.sleep(0.02)


def wait_until_running(stub: pb_grpc.PipeLiveStub, timeout: float = 10.0) -> pb.StatusResponse:
    deadline = time.monotonic() + timeout
    while True:
        status = stub.Status(pb.StatusRequest(), timeout=5)
        if status.num_requests_running == 1 and status.kv_blocks_used > 0:
            return status
        assert time.monotonic() < deadline, f"no request running: {status}"
        time.sleep(0.01)


def metric_values(server: RunningPipeLive) -> dict[str, float]:
    text = urllib.request.urlopen(server.base_url + "/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_openai_client_streams_and_grpc_stream_matches(
    client: openai.OpenAI, stub: pb_grpc.PipeLiveStub
) -> None:
    prompt = "PipeLive moves layers while it serves."
    chunks = list(client.completions.create(model=TINY.name, prompt=prompt, max_tokens=12, stream=True))
    streamed_ids = [chunk.choices[0].model_extra["token_ids"][0] for chunk in chunks]
    streamed_text = "".join(chunk.choices[0].text for chunk in chunks)
    assert len(chunks) == 12
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 11 + ["length"]
    # greedy tokens are the model's: the dense reference of the same weights agrees
    assert streamed_ids == DenseReference(TINY).generate([list(prompt.encode())], 12)[0]

    replies = list(stub.Generate(pb.GenerateRequest(prompt=prompt, max_tokens=12), timeout=30))
    assert [r.token_id for r in replies] == streamed_ids
    assert "".join(r.text for r in replies) == streamed_text
    assert [r.index for r in replies] == list(range(12))
    assert replies[-1].finish_reason == "length" and not replies[0].finish_reason

    whole = client.completions.create(model=TINY.name, prompt=prompt, max_tokens=12)
    assert whole.choices[0].text == streamed_text
    assert whole.usage.prompt_tokens == len(prompt.encode()) and whole.usage.completion_tokens == 12


def test_token_id_prompts_and_models_list(client: openai.OpenAI, stub: pb_grpc.PipeLiveStub) -> None:
    ids = [10, 20, 30, 40, 50]
    by_http = client.completions.create(model=TINY.name, prompt=ids, max_tokens=5)
    by_grpc = [r.token_id for r in stub.Generate(pb.GenerateRequest(prompt_token_ids=ids, max_tokens=5))]
    assert by_http.choices[0].model_extra["token_ids"] == by_grpc
    assert [m.id for m in client.models.list()] == [TINY.name]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": TINY.name, "prompt": "", "max_tokens": 4}, "prompt", "empty"),
        (
            {"model": TINY.name, "prompt": "x" * 600, "max_tokens": 4},
            "prompt",
            "maximum context length is 512",
        ),
        ({"model": TINY.name, "prompt": "hello", "max_tokens": 0}, "max_tokens", "positive integer"),
        (
            {"model": TINY.name, "prompt": "hello", "max_tokens": 600},
            "max_tokens",
            "exceed the maximum context",
        ),
        ({"model": "gpt-4", "prompt": "hello"}, "model", "does not exist"),
        ({"model": TINY.name, "prompt": [1, 2, 999]}, "prompt", "outside the vocabulary"),
        ({"model": TINY.name, "prompt": "hi", "temperature": 9}, "temperature", "between 0 and 2"),
        ({"model": TINY.name, "prompt": "hi", "n": 3}, "n", "n = 1"),
        ({"model": TINY.name, "prompt": "hi", "temperature": 1, "top_p": 0}, "top_p", "(0, 1]"),
        ({"model": TINY.name, "prompt": "hi", "top_p": 1.01}, "top_p", "(0, 1]"),
        ({"model": TINY.name, "prompt": "hi", "top_k": -3}, "top_k", "positive integer"),
        ({"model": TINY.name, "prompt": "hi", "top_k": 2.5}, "top_k", "positive integer"),
        ([1, 2, 3], "body", "JSON object"),
    ],
)
def test_bad_input_is_a_400_with_an_openai_error(
    server: RunningPipeLive, body: Any, param: str, words: str
) -> None:
    status, reply = post(server, json.dumps(body).encode())
    assert status == 400
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["param"] == param
    assert words in reply["error"]["message"]


def test_seeded_top_p_top_k_samples_repeat_over_http_and_grpc(
    client: openai.OpenAI, stub: pb_grpc.PipeLiveStub
) -> None:
    prompt = "Sample me, seeded."
    greedy = client.completions.create(model=TINY.name, prompt=prompt, max_tokens=10)
    settings = {"temperature": 1.3, "top_p": 0.9, "seed": 21}

    def by_http(**extra: Any) -> list[int]:
        reply = client.completions.create(
            model=TINY.name, prompt=prompt, max_tokens=10, **{**settings, **extra}, extra_body={"top_k": 50}
        )
        return reply.choices[0].model_extra["token_ids"]

    sampled = by_http()
    assert sampled == by_http()  # the seed makes it reproducible
    assert sampled != greedy.choices[0].model_extra["token_ids"]
    assert sampled != by_http(seed=22)
    request = pb.GenerateRequest(prompt=prompt, max_tokens=10, top_k=50, **settings)
    assert [r.token_id for r in stub.Generate(request, timeout=30)] == sampled
    one = pb.GenerateRequest(prompt=prompt, max_tokens=10, temperature=1.3, seed=3, top_k=1)
    assert [r.token_id for r in stub.Generate(one, timeout=30)] == greedy.choices[0].model_extra["token_ids"]


def test_malformed_json_is_a_400_and_the_server_keeps_serving(
    server: RunningPipeLive, client: openai.OpenAI
) -> None:
    status, reply = post(server, b'{"prompt": "hello", "max_tokens": ')
    assert status == 400 and "not valid JSON" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="does not exist"):
        client.completions.create(model="nope", prompt="hello", max_tokens=3)
    assert (
        client.completions.create(model=TINY.name, prompt="still here", max_tokens=3).usage.completion_tokens
        == 3
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GenerateRequest(prompt="", max_tokens=4), "prompt"),
        (pb.GenerateRequest(prompt="hello", max_tokens=0), "max_tokens"),
        (pb.GenerateRequest(prompt="hello", max_tokens=1000), "max_tokens"),
        (pb.GenerateRequest(prompt="y" * 700), "prompt"),
        (pb.GenerateRequest(prompt="hello", model="other"), "model"),
        (pb.GenerateRequest(prompt="hello", prompt_token_ids=[1]), "prompt"),
        (pb.GenerateRequest(prompt="hello", temperature=1, top_p=0), "top_p"),
        (pb.GenerateRequest(prompt="hello", top_p=2), "top_p"),
        (pb.GenerateRequest(prompt="hello", top_k=-2), "top_k"),
    ],
)
def test_grpc_bad_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.PipeLiveStub, request_: pb.GenerateRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Generate(request_, timeout=10))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: ")


def test_http_client_disconnecting_mid_stream_frees_its_blocks(
    server: RunningPipeLive, stub: pb_grpc.PipeLiveStub
) -> None:
    before = metric_values(server)
    connection = http.client.HTTPConnection("127.0.0.1", server.ports.http, timeout=10)
    body = {"model": TINY.name, "prompt": "a long story " * 8, "max_tokens": 400, "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    events = 0
    while events < 3:
        if response.readline().startswith(b"data: "):
            events += 1
    status = stub.Status(pb.StatusRequest())
    assert status.kv_blocks_used > 0 and status.num_requests_running == 1
    connection.sock.close()  # the client goes away mid-stream
    connection.close()
    wait_until_idle(stub)
    after = metric_values(server)
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert 3 <= generated < 400  # aborted, not run to the end
    assert after.get("vllm:request_success_total", 0) == before.get("vllm:request_success_total", 0)


def test_http_client_disconnecting_before_a_whole_completion_frees_its_blocks(
    server: RunningPipeLive, stub: pb_grpc.PipeLiveStub
) -> None:
    before = metric_values(server)
    body = {"model": TINY.name, "prompt": "a patient story " * 6, "max_tokens": 400}  # not streamed

    async def post_and_go_away() -> pb.StatusResponse:
        async with aiohttp.ClientSession() as session:
            posting = asyncio.create_task(session.post(server.base_url + "/v1/completions", json=body))
            running = await asyncio.to_thread(wait_until_running, stub)
            posting.cancel()  # the client gives up before the answer: aiohttp drops the connection
            with pytest.raises(asyncio.CancelledError):
                await posting
            return running

    running = asyncio.run(post_and_go_away())
    assert running.kv_blocks_used > 0
    status = wait_until_idle(stub)
    assert status.kv_blocks_free == status.kv_blocks_total
    assert all(stage.kv_blocks_used == 0 for stage in status.stages)
    after = metric_values(server)
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated < 400  # stopped early (perhaps still in its chunked prefill), not run to the end
    # it finished, and not as a success: aborted
    assert (
        after["vllm:e2e_request_latency_seconds_count"]
        == before["vllm:e2e_request_latency_seconds_count"] + 1
    )
    assert after.get("vllm:request_success_total", 0) == before.get("vllm:request_success_total", 0)


def test_grpc_client_cancelling_mid_stream_frees_its_blocks(
    server: RunningPipeLive, stub: pb_grpc.PipeLiveStub
) -> None:
    before = metric_values(server)
    call = stub.Generate(pb.GenerateRequest(prompt="cancel me " * 6, max_tokens=400))
    for _, _reply in zip(range(3), call, strict=False):
        pass
    assert stub.Status(pb.StatusRequest()).kv_blocks_used > 0
    call.cancel()
    status = wait_until_idle(stub)
    assert all(stage.kv_blocks_used == 0 for stage in status.stages)
    generated = metric_values(server)["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert 3 <= generated < 400  # aborted, not run to the end


def test_status_reports_stages_layers_and_memory(stub: pb_grpc.PipeLiveStub) -> None:
    status = stub.Status(pb.StatusRequest())
    assert status.model == TINY.name and status.num_layers == 4
    assert [(s.first_layer, s.end_layer) for s in status.stages] == [(0, 2), (2, 4)]
    for stage in status.stages:
        assert stage.weight_bytes > 0 and stage.kv_bytes == stage.kv_chunks * stage.kv_chunk_bytes
        assert stage.kv_blocks_total == status.kv_blocks_total == stage.kv_blocks_used + stage.kv_blocks_free
        assert stage.weight_bytes + stage.kv_bytes <= stage.usable_bytes <= stage.budget_bytes
        assert stage.kv_blocks_capacity >= stage.kv_blocks_total


def test_resize_over_grpc_grows_shrinks_and_refuses(stub: pb_grpc.PipeLiveStub) -> None:
    start = stub.Status(pb.StatusRequest()).kv_blocks_total
    grown = stub.ResizeKvPool(pb.ResizeKvPoolRequest(target_blocks=start + 20))
    assert grown.kv_blocks_total == start + 24 and len(grown.added_chunks) == 3  # whole chunks of 8
    back = stub.ResizeKvPool(pb.ResizeKvPoolRequest(target_blocks=start))
    assert sorted(back.released_chunks) == sorted(grown.added_chunks) and back.kv_blocks_total == start
    capacity = stub.Status(pb.StatusRequest()).stages[0].kv_blocks_capacity
    with pytest.raises(grpc.RpcError) as refused:
        stub.ResizeKvPool(pb.ResizeKvPoolRequest(target_blocks=capacity + 100))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has room for" in refused.value.details()
    with pytest.raises(grpc.RpcError) as invalid:
        stub.ResizeKvPool(pb.ResizeKvPoolRequest(target_blocks=0))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_use_vllm_names_and_types(server: RunningPipeLive, client: openai.OpenAI) -> None:
    client.completions.create(model=TINY.name, prompt="count me", max_tokens=4)
    text = urllib.request.urlopen(server.base_url + "/metrics", timeout=10).read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    reference = json.loads((SHARED_DATA / "vllm-metrics" / "vllm-v0.10.2-metric-names.json").read_text())
    # no prefix cache in this engine, so no prefix-cache series
    wanted = [m for m in reference["metrics"] if "prefix_cache" not in m["name"]]
    for metric in wanted:
        name = metric["name"].removesuffix("_total") if metric["type"] == "counter" else metric["name"]
        assert name in families, f"{metric['name']} is missing"
        # the text exposition format carries an info metric as a gauge named ..._info
        assert families[name].type == metric["type"].replace("info", "gauge"), metric["name"]
    values = metric_values(server)
    assert values["vllm:time_to_first_token_seconds_count"] >= 1
    assert values["vllm:e2e_request_latency_seconds_count"] >= 1
    assert values["vllm:request_success_total"] >= 1
    assert values["vllm:prompt_tokens_total"] >= len(b"count me")
    assert 'model_name="pipelive-tiny"' in text
