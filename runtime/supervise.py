"""Running a service's tasks together: the first to fail stops the others and the service.

`serve_together()` runs the tasks in an `asyncio.TaskGroup`; a task that
raises cancels its siblings, and the failure is re-raised as itself (not
wrapped in an ExceptionGroup) when it is the only one, so `Service.stop()`
re-raises what really ended the service. `watch()` turns a helper that runs
its own task and only reports `failed` (a `Follower`, a `ControlReader`)
into a task of the group. CancelledError is never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, Protocol

__all__ = ["serve_together", "watch"]


class Watched(Protocol):
    """A helper that runs its own task (a `Follower`, a `ControlReader`)."""

    @property
    def failed(self) -> BaseException | None: ...


# How often a watched helper's `failed` is read: the loops' own poll cadence.
WATCH_INTERVAL_S = 0.2


async def serve_together(*tasks: Coroutine[Any, Any, None]) -> None:
    """Run `tasks` until all return; the first failure cancels the rest and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(task)
    except BaseExceptionGroup as failed:
        if len(failed.exceptions) == 1:
            raise failed.exceptions[0] from None
        raise


async def watch(
    stop: asyncio.Event,
    helper: Watched,
    *,
    interval_s: float = WATCH_INTERVAL_S,
) -> None:
    """Return once `stop` is set; raise what `helper.failed` reports as soon as it does."""
    while not stop.is_set():
        exc = helper.failed
        if exc is not None:
            raise exc
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
