"""The synchronous client: the asyncio SDK for code that does not use asyncio.

    import sluicegate
    from sluicegate.schemas.models import InferenceRequest

    with sluicegate.Client() as client:
        result = client.submit(InferenceRequest(request_id="r-1", model="text-embed", texts=["hi"]))
        for result in client.stream(requests, max_in_flight=64):   # as they complete
            ...
        client.cancel("r-2")

One `streams.client.Client` runs on an event loop in a daemon thread that
this object owns (started by `start()` / `with`, stopped and joined by
`close()`); every method hands a coroutine to that loop and blocks until it
is done. Safe to call from several threads. Calling it from inside a running
event loop is refused (it would block that loop): async code uses
`sluicegate.AsyncClient`.

Written by hand (about 100 lines) rather than with a bridge library: the
candidates (asgiref's `async_to_sync`, anyio's blocking portal) bring either
a per-call loop, which cannot keep the Kafka connections, or a dependency for
what `asyncio.run_coroutine_threadsafe` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from opentelemetry.trace import TracerProvider

from sluicegate.schemas.models import InferenceRequest, InferenceResult

from .client import Client as AsyncClient
from .client import ClientNotStarted, ClientSettings

T = TypeVar("T")
_END = object()


class Client:
    """Blocking `submit`, `submit_many`, `stream`, `send` and `cancel` (see the module doc)."""

    def __init__(
        self,
        *,
        settings: ClientSettings | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._client = AsyncClient(settings=settings, tracer_provider=tracer_provider)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def reply_topic(self) -> str:
        return self._client.reply_topic

    def start(self) -> None:
        """Start the loop thread and connect; raises what the async client's `start` raises."""
        _refuse_inside_a_loop()
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sg-client-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._run(self._client.start())
        except BaseException:
            self._shut_loop()
            raise

    def close(self) -> None:
        """Disconnect and stop the loop thread (at most once; later calls do nothing)."""
        if self._loop is None:
            return
        try:
            self._run(self._client.stop())
        finally:
            self._shut_loop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, request: InferenceRequest) -> InferenceRequest:
        """Produce `request` without waiting for its result; returns it as sent."""
        return self._run(self._client.send(request))

    def submit(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResult:
        """Send `request` and block until its one result. Raises `ResultTimeout`."""
        return self._run(self._client.submit(request, timeout=timeout))

    def submit_many(
        self,
        requests: Iterable[InferenceRequest],
        *,
        max_in_flight: int = 64,
        timeout: float | None = None,
    ) -> list[InferenceResult]:
        """Every request's result, in the order of `requests`."""
        coro = self._client.submit_many(requests, max_in_flight=max_in_flight, timeout=timeout)
        return self._run(coro)

    def stream(
        self,
        requests: Iterable[InferenceRequest],
        *,
        max_in_flight: int = 64,
        timeout: float | None = None,
    ) -> Iterator[InferenceResult]:
        """Yield one result per request as they complete (`AsyncClient.stream`).

        `requests` is iterated on the client's loop thread, a slot at a time.
        """
        # One result at a time crosses to the caller's thread: the async stream
        # frees a slot only once the previous result was taken, so a slow caller
        # holds back new requests instead of piling up results.
        out: queue.Queue[Any] = queue.Queue(maxsize=1)
        closed = threading.Event()

        async def pump() -> None:
            loop = asyncio.get_running_loop()
            results = self._client.stream(requests, max_in_flight=max_in_flight, timeout=timeout)
            try:
                async with contextlib.aclosing(results):  # cancelled: forget what is in flight
                    async for result in results:
                        await loop.run_in_executor(None, _hand_over, out, result, closed)
            except Exception as exc:  # raised in the caller's thread below
                await loop.run_in_executor(None, _hand_over, out, exc, closed)
            else:
                await loop.run_in_executor(None, _hand_over, out, _END, closed)

        task = self._submit(pump())
        try:
            while (item := out.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            closed.set()
            task.cancel()

    def cancel(self, request_id: str) -> None:
        """Publish a cancel for `request_id` (answered `rejected: cancelled` if not yet run)."""
        self._run(self._client.cancel(request_id))

    # -- the loop thread ----------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        _refuse_inside_a_loop()
        if self._loop is None:
            coro.close()
            raise ClientNotStarted()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._submit(coro).result()

    def _shut_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def _hand_over(out: queue.Queue[Any], item: object, closed: threading.Event) -> None:
    """Put `item` for the caller, unless it stopped reading (then drop it)."""
    while not closed.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _refuse_inside_a_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "sluicegate.Client blocks, and this thread runs an event loop; in async code use "
        "`async with sluicegate.AsyncClient() as client:` and `await client.submit(...)`"
    )
