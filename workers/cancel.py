"""Cancellation on the worker side: follows the control topic's cancel records.

A worker asks `cancelled(request_id)` when it admits a record, and looks for
the ids of `take_new()` among the requests waiting in its batcher; either
way a cancelled request is answered `rejected: cancelled` instead of run. The watcher reads
the control topic from the beginning (a `runtime.follow.Follower`) and has
caught up with what was there when `start()` returned, so a cancel produced
before the worker started is honoured. Route records on the same topic are
ignored here, and so are malformed records (logged; the router dead-letters
them, `streams.control`). A missing control topic is not fatal: the worker serves, logs
it, and the follower keeps looking. Cancels older than `ttl_s` are forgotten.

Failure surface: if the follower dies, cancels would silently stop being
honoured; instead `cancelled()` and `take_new()` raise `CancelsStoppedError`
(with the follower's exception as its cause), which stops the worker.
"""

from __future__ import annotations

import logging

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.runtime.records import Record
from sluicegate.schemas.control import CANCEL_PREFIX, Cancel, decode_control
from sluicegate.schemas.errors import ErrorCode

log = logging.getLogger("sluicegate.worker.cancel")

CANCELLED_MESSAGE = ErrorCode.CANCELLED.message


class CancelsStoppedError(RuntimeError):
    """The control-topic follower died; this worker can no longer honour cancels."""


class CancelWatcher:
    def __init__(self, *, kafka: KafkaSettings, topic: str, ttl_s: float = 600.0) -> None:
        self._ttl_ms = int(ttl_s * 1000)
        self._cancels: dict[str, int] = {}  # request_id -> ts_ms
        self._new: set[str] = set()  # cancelled since the last take_new()
        self._follower = Follower(
            kafka=kafka, topic=topic, handle=self._handle, start="beginning", name="cancels"
        )

    def cancelled(self, request_id: str) -> bool:
        self._raise_if_stopped()
        return request_id in self._cancels

    def take_new(self) -> set[str]:
        """Ids cancelled since the last call: what a worker must look for in its queue."""
        self._raise_if_stopped()
        self._expire()
        new, self._new = self._new, set()
        return new

    async def start(self, *, timeout: float = 10.0, find_s: float = 2.0) -> None:
        """Catch up with the control topic (within `timeout`), then follow it in a task.

        A topic that does not show up within `find_s` is looked for in the
        background, so a worker without one starts without waiting.
        """
        await self._follower.start(catch_up=True, timeout=timeout, find_s=find_s, required=False)

    async def stop(self) -> None:
        await self._follower.stop()

    def _raise_if_stopped(self) -> None:
        if (exc := self._follower.failed) is not None:
            raise CancelsStoppedError(
                f"the control topic follower died ({exc!r}); restart the worker"
            ) from exc

    def _handle(self, rec: Record) -> None:
        if not (rec.key or b"").startswith(CANCEL_PREFIX.encode()):
            return
        try:
            key, cancel = decode_control(rec.key, rec.value, list(rec.headers))
        except Exception as exc:  # any bytes at all: a bad record never stops the follower
            log.warning("skipped control record @%d: %s", rec.offset, type(exc).__name__)
            return
        if isinstance(cancel, Cancel) and now_ms() - cancel.ts_ms <= self._ttl_ms:
            self._cancels[cancel.request_id] = cancel.ts_ms
            self._new.add(cancel.request_id)
        elif cancel is None:
            self._cancels.pop(key.removeprefix(CANCEL_PREFIX), None)

    def _expire(self) -> None:
        horizon = now_ms() - self._ttl_ms
        for rid in [r for r, ts in self._cancels.items() if ts < horizon]:
            del self._cancels[rid]
