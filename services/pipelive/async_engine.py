"""Runs an `LLMEngine` on a thread of its own and lets asyncio code stream from it.

The engine thread owns the engine: it carries out queued commands (add, abort, resize, status) between
iterations — the safe point — and steps while there is work, handing each new token to the event loop of
the request's consumer. A consumer that stops early (a client gone mid-stream) aborts its request, which
frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from services.pipelive.engine import LLMEngine, TokenOutput
from services.pipelive.params import SamplingParams

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineDead(RuntimeError):
    """The engine loop stopped (it failed or was shut down)."""


class AsyncEngine:
    """An engine loop thread plus per-request streams for asyncio consumers."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._commands: deque[tuple[Callable[[LLMEngine], Any], Future[Any]]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._error: BaseException | None = None
        self._streams: dict[
            str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[TokenOutput | BaseException]]
        ] = {}
        self._thread = threading.Thread(target=self._run, name="pipelive-engine", daemon=True)

    def start(self) -> AsyncEngine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.engine.close()

    # commands run between iterations
    def submit(self, command: Callable[[LLMEngine], T]) -> Future[T]:
        future: Future[T] = Future()
        if self._error is not None or self._stopping:
            future.set_exception(EngineDead("the engine is not running"))
            return future
        self._commands.append((command, future))
        self._wake.set()
        return future

    async def call(self, command: Callable[[LLMEngine], T]) -> T:
        return await asyncio.wrap_future(self.submit(command))

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[TokenOutput]:
        """Stream the request's tokens; closing the stream early (contextlib.aclosing) aborts the request."""
        request_id = request_id or f"cmpl-{uuid.uuid4().hex}"
        queue: asyncio.Queue[TokenOutput | BaseException] = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), queue)
        finished = False
        try:
            await self.call(lambda engine: engine.add_request(prompt_token_ids, params, request_id))
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.submit(lambda engine: engine.abort_request(request_id))

    # the loop
    def _run(self) -> None:
        try:
            while not self._stopping:
                while self._commands:
                    command, future = self._commands.popleft()
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(command(self.engine))
                        except BaseException as error:  # noqa: BLE001 - handed to the caller
                            future.set_exception(error)
                if self.engine.has_unfinished():
                    self._deliver(self.engine.step())
                elif self.engine.reconfiguring:
                    self.engine.step()  # no requests, but a reconfiguration advances at safe points
                    self._wake.wait(timeout=0.002)
                    self._wake.clear()
                else:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
        except BaseException as error:  # noqa: BLE001 - every waiting stream learns of it
            log.exception("the engine loop failed")
            self._error = error
            for loop, queue in list(self._streams.values()):
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, EngineDead(f"the engine failed: {error}"))
            while self._commands:
                self._commands.popleft()[1].set_exception(EngineDead("the engine failed"))

    def _deliver(self, outputs: list[TokenOutput]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], TokenOutput]]] = {}
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is not None:
                by_loop.setdefault(stream[0], []).append((stream[1], output))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: its consumers are gone
                loop.call_soon_threadsafe(_put_all, items)

    @property
    def healthy(self) -> bool:
        return self._error is None and self._thread.is_alive()


def _put_all(items: list[tuple[asyncio.Queue[Any], TokenOutput]]) -> None:
    for queue, output in items:
        queue.put_nowait(output)
