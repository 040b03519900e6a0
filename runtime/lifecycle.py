"""One lifecycle for every long-lived process part: `start()` / `stop()` and `async with`.

A service implements `_serve(stop, ready)`: it runs until `stop` is set,
calls `ready()` once it serves (joined its group, loaded its state), then
drains and returns. `start()` runs `_serve` as a task and returns when it is
ready; if `_serve` fails first, `start()` raises that failure. `stop()` sets
the event, awaits the task and re-raises what it failed with. `wait()`
awaits the end without asking for it (a process's foreground loop).

    async with Worker(settings=..., backend=...) as worker:
        ...  # serving; leaving the block drains and commits
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["Service"]


class Service(abc.ABC):
    """Base of `Worker`, `Router` and `TelemetryRollups`; not restartable once stopped."""

    _task: asyncio.Task[None] | None = None
    _stop_event: asyncio.Event | None = None

    @abc.abstractmethod
    async def _serve(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        """Serve until `stop` is set; set `ready` once serving. Raises what ends it abnormally."""

    async def start(self) -> None:
        """Start serving; returns once ready. Raises if serving failed before it was ready."""
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__} was already started")
        self._stop_event, ready = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._serve(self._stop_event, ready))
        ready_wait = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait({self._task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready_wait.cancel()
        if self._task.done():
            await self._task  # raises its failure; a clean return before ready is odd but fine

    def request_stop(self) -> None:
        """Ask the service to drain and stop (safe from a signal handler); `stop()` awaits it."""
        if self._stop_event is not None:
            self._stop_event.set()

    async def stop(self) -> None:
        """Drain and stop; re-raises the failure that ended the service, if one did."""
        if self._task is None:
            return
        self.request_stop()
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            # Our caller was cancelled: cancel the service too, then propagate.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            raise

    async def wait(self) -> None:
        """Wait until the service ends (after `request_stop`, or on failure)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
