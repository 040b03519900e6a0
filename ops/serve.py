"""Running one service in the foreground of a process (the CLI's worker, router, telemetry)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from sluicegate.runtime.lifecycle import Service

__all__ = ["serve_until_signalled", "wait_for_signal"]


#: How often `--heartbeat-file` is touched; a liveness probe allows a few misses.
HEARTBEAT_S = 5.0


def serve_until_signalled(
    make: Callable[[], AbstractAsyncContextManager[Service]],
    ready_file: Path | None,
    heartbeat_file: Path | None = None,
) -> None:
    """Run the service `make()` yields in the foreground until SIGINT/SIGTERM, then drain.

    `make` is entered inside the event loop (aiokafka clients must be built
    there) and exited after the service stopped (close what it owns there).
    `ready_file` is touched once the service is ready (what `sluicegate up` waits for).
    `heartbeat_file` is touched every HEARTBEAT_S seconds by a task of the event
    loop, from before `make()` (a worker waiting for Triton is alive) until the
    end: a stale file means the loop is stuck (the k8s liveness probe).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def serve() -> None:
        beat = None if heartbeat_file is None else asyncio.create_task(_beat(heartbeat_file))
        try:
            await run()
        finally:
            if beat is not None:
                beat.cancel()

    async def run() -> None:
        async with make() as service:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, service.request_stop)
            async with service:
                if ready_file is not None:
                    await asyncio.to_thread(ready_file.touch)
                await service.wait()

    asyncio.run(serve())


async def _beat(path: Path) -> None:
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    while True:
        await asyncio.to_thread(path.touch)
        await asyncio.sleep(HEARTBEAT_S)


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (for servers in child processes: `broker`, `triton`)."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    while not received:
        time.sleep(0.2)
