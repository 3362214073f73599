"""OpenAI-compatible HTTP API (the subset vLLM's clients use), Prometheus metrics and health, on aiohttp.

`POST /v1/completions` (with `stream: true` as server-sent events), `GET /v1/models`, `GET /metrics`,
`GET /health`. Bad input is answered with HTTP 400 and an OpenAI-style error object naming the parameter.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.pipelive.async_engine import AsyncEngine
from services.pipelive.metrics import PrometheusMetrics
from services.pipelive.params import InvalidRequest, SamplingParams, validate
from services.pipelive.tokenizer import ByteTokenizer

ENGINE_KEY: web.AppKey[AsyncEngine] = web.AppKey("engine", AsyncEngine)
METRICS_KEY: web.AppKey[PrometheusMetrics] = web.AppKey("metrics", PrometheusMetrics)
TOKENIZER_KEY: web.AppKey[ByteTokenizer] = web.AppKey("tokenizer", ByteTokenizer)


def error_response(message: str, param: str | None, status: int = 400) -> web.Response:
    kind = "invalid_request_error" if status == 400 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


def _prompt_ids(body: dict[str, Any], tokenizer: ByteTokenizer) -> list[int]:
    prompt = body.get("prompt")
    # The OpenAI schema allows a string, a list of strings, token ids, or a list of token-id lists.
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        raise InvalidRequest("prompt", "only one prompt per request is supported")
    if prompt is None:
        raise InvalidRequest("prompt", "prompt is required")
    raise InvalidRequest("prompt", "prompt must be a string or a list of token ids")


def parse_completion_request(
    body: Any, engine: AsyncEngine, tokenizer: ByteTokenizer
) -> tuple[list[int], SamplingParams, bool]:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "the request body must be a JSON object")
    if body.get("n", 1) != 1 or body.get("best_of", 1) not in (1, None):
        raise InvalidRequest("n", "only n = 1 is supported")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream", "stream must be true or false")
    prompt_ids = _prompt_ids(body, tokenizer)
    params = validate(
        engine.engine.limits(),
        prompt_ids,
        body.get("max_tokens"),
        body.get("temperature"),
        body.get("model"),
        body.get("seed"),
        body.get("top_p"),
        body.get("top_k"),
    )
    return prompt_ids, params, stream


async def completions(request: web.Request) -> web.StreamResponse:
    engine, tokenizer = request.app[ENGINE_KEY], request.app[TOKENIZER_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return error_response(f"the request body is not valid JSON: {error}", None)
    try:
        prompt_ids, params, stream = parse_completion_request(body, engine, tokenizer)
    except InvalidRequest as error:
        return error_response(str(error), error.field)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = engine.engine.model.name
    decoder = tokenizer.stream_decoder()
    if not stream:
        tokens, reason = [], None
        async with contextlib.aclosing(engine.generate(prompt_ids, params, request_id)) as outputs:
            async for output in outputs:
                tokens.append(output.token_id)
                reason = output.finish_reason
        text = "".join(decoder.push(t) for t in tokens) + decoder.flush()
        return web.json_response(
            {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "token_ids": tokens}
                ],
                "usage": {
                    "prompt_tokens": len(prompt_ids),
                    "completion_tokens": len(tokens),
                    "total_tokens": len(prompt_ids) + len(tokens),
                },
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    async with contextlib.aclosing(engine.generate(prompt_ids, params, request_id)) as outputs:
        async for output in outputs:
            text = decoder.push(output.token_id) + (decoder.flush() if output.finished else "")
            chunk = {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": output.finish_reason,
                        "token_ids": [output.token_id],
                    }
                ],
            }
            # A client that went away makes this write raise; leaving the loop aborts the request.
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY].engine
    card = {
        "id": engine.model.name,
        "object": "model",
        "created": 0,
        "owned_by": "pipelive",
        "max_model_len": engine.max_model_len,
    }
    return web.json_response({"object": "list", "data": [card]})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    healthy = request.app[ENGINE_KEY].healthy
    return web.Response(status=200 if healthy else 503, text="ok" if healthy else "engine stopped")


def build_app(engine: AsyncEngine, metrics_: PrometheusMetrics, tokenizer: ByteTokenizer) -> web.Application:
    app = web.Application(client_max_size=16 * 2**20)
    app[ENGINE_KEY] = engine
    app[METRICS_KEY] = metrics_
    app[TOKENIZER_KEY] = tokenizer
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app
