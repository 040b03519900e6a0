"""Running one service in the foreground of a process (the CLI's worker, router, telemetry)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from sluicegate.runtime.lifecycle import Service

__all__ = ["serve_until_signalled"]


def serve_until_signalled(
    make: Callable[[], AbstractAsyncContextManager[Service]], ready_file: Path | None
) -> None:
    """Run the service `make()` yields in the foreground until SIGINT/SIGTERM, then drain.

    `make` is entered inside the event loop (aiokafka clients must be built
    there) and exited after the service stopped (close what it owns there).
    `ready_file` is touched once the service is ready (what `sluicegate up` waits for).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def serve() -> None:
        async with make() as service:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, service.request_stop)
            async with service:
                if ready_file is not None:
                    await asyncio.to_thread(ready_file.touch)
                await service.wait()

    asyncio.run(serve())
