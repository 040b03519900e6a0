"""The admission stage: `admission.admit` off the event loop, in a bounded thread pool.

Decoding, validating and pricing read files, parse image headers and
tokenize; they run in `preprocess_threads` threads, at most that many
calls at a time, so the loop goes on fetching while they run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.records import Record
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.errors import WireError

from .admission import Admitted, admit_all
from .config import WorkerSettings
from .quarantine import Quarantine


class Preprocessor:
    """Owns the thread pool; `start()` before `admit`, `stop()` once at the end."""

    def __init__(self, *, settings: WorkerSettings, quarantine: Quarantine | None = None) -> None:
        self._quarantine = quarantine
        self._spec = lookup(settings.model)
        self._threads = settings.preprocess_threads
        self._limits = WireLimits(
            image_root=settings.image_root, max_ref_image_bytes=settings.images.max_bytes
        )
        self._sources = ImageSources(settings=settings.images)
        self._topics = settings.topics
        self._slots = asyncio.Semaphore(settings.preprocess_threads)
        self._executor: ThreadPoolExecutor | None = None
        self._counter: TokenCounter | None = None

    async def start(self) -> None:
        """Start the threads and load the tokenizer in one of them."""
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="sg-prep")
        loop = asyncio.get_running_loop()
        self._counter = await loop.run_in_executor(self._executor, TokenCounter)

    def stop(self) -> None:
        """Drop queued work; does not wait for running calls."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._sources.close()

    async def admit(self, records: Sequence[Record]) -> list[Admitted | WireError]:
        """One outcome per record, in order: admitted, or the `WireError` refusing it.

        A record in quarantine (`workers.quarantine`) is refused `poison` whatever it holds.
        """
        assert self._executor is not None, "start() first"
        async with self._slots:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._executor, self._admit_all, records)
        if self._quarantine is None:
            return outcomes
        return [
            self._quarantine.check(rec) or out for rec, out in zip(records, outcomes, strict=True)
        ]

    def _admit_all(self, records: Sequence[Record]) -> list[Admitted | WireError]:
        assert self._counter is not None
        return admit_all(
            [(rec.value, rec.headers) for rec in records],
            serving=self._spec,
            counter=self._counter,
            limits=self._limits,
            topics=self._topics,
            sources=self._sources,
        )
