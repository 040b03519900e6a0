"""The route table and cancel list, rebuilt from the compacted `sg.control` topic.

Every router reads the whole topic at start-up (`ControlReader.start()`
returns once it has caught up with the end offsets it saw), then follows it,
so every instance converges on the same table within a fetch round trip.
`publish_route()` / `rollback_route()` / `publish_cancel()` are what
`sluicegate route set|rollback` and `sluicegate cancel` call.

Anyone who may write the topic can write garbage to it (bad msgpack, a wrong
schema, a key with an unknown prefix, a huge value). Such a record is
skipped, never applied and never fatal; once caught up, the reader hands it
to `on_malformed` (the router dead-letters it, reason `control_malformed`).
Records seen while catching up at start-up are only logged: every router
re-reads the whole topic at start, and dead-lettering them again on every
restart would flood the DLQ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.kafka import AUTHORIZATION_ERRORS, KafkaSettings, idempotent_producer
from sluicegate.runtime.records import Record
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.control import Cancel, RouteSpec, decode_control

from .errors import NoEarlierRouteError

log = logging.getLogger("sluicegate.control")


class ControlState:
    """Latest route per model and recent cancels. Pure bookkeeping.

    Cancels older than the TTL are forgotten and listed by `take_stale()`, so
    a router can write their tombstones: compaction keeps the latest record
    of every key, and without tombstones cancel keys would pile up forever.
    """

    def __init__(self, *, cancel_ttl_s: float = 600.0) -> None:
        self.routes: dict[str, RouteSpec] = {}
        self._cancels: dict[str, int] = {}  # request_id -> ts_ms
        self._stale: set[str] = set()  # expired cancels not yet tombstoned
        self._cancel_ttl_ms = int(cancel_ttl_s * 1000)
        self.applied = 0  # records applied, for tests and metrics

    def apply(self, key: str, record: RouteSpec | Cancel | None, *, now: int) -> None:
        self.applied += 1
        if isinstance(record, RouteSpec):
            self.routes[record.model] = record
        elif isinstance(record, Cancel):
            if now - record.ts_ms <= self._cancel_ttl_ms:
                self._cancels[record.request_id] = record.ts_ms
            else:
                self._stale.add(record.request_id)
        elif key.startswith("route/"):
            self.routes.pop(key.removeprefix("route/"), None)
        else:
            rid = key.removeprefix("cancel/")
            self._cancels.pop(rid, None)
            self._stale.discard(rid)

    def route(self, model: str) -> RouteSpec | None:
        return self.routes.get(model)

    def cancelled(self, request_id: str) -> bool:
        return request_id in self._cancels

    def expire(self, *, now: int) -> None:
        horizon = now - self._cancel_ttl_ms
        for rid in [r for r, ts in self._cancels.items() if ts < horizon]:
            del self._cancels[rid]
            self._stale.add(rid)

    def take_stale(self) -> list[str]:
        """Request ids whose cancel expired: write a tombstone for each (at most once here)."""
        stale, self._stale = sorted(self._stale), set()
        return stale


class ControlReader:
    """Follows the control topic into a `ControlState`. `async with` or start()/stop()."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topic: str,
        state: ControlState | None = None,
        on_change: Callable[[str], None] | None = None,
        on_malformed: Callable[[Record, Exception], None] | None = None,
    ) -> None:
        self.state = state or ControlState()
        self._on_change = on_change
        self._on_malformed = on_malformed
        self._caught_up = False
        self.malformed = 0  # records skipped
        self._follower = Follower(
            kafka=kafka, topic=topic, handle=self._apply, start="beginning", name="control"
        )

    async def start(self, *, timeout: float = 30.0) -> None:
        """Read the topic up to its current end, then keep following it in a task."""
        await self._follower.start(catch_up=True, timeout=timeout)
        self._caught_up = True

    async def stop(self) -> None:
        await self._follower.stop()

    @property
    def failed(self) -> BaseException | None:
        return self._follower.failed

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _apply(self, rec: Record) -> None:
        try:
            key, record = decode_control(rec.key, rec.value, list(rec.headers))
        except Exception as exc:  # any bytes at all: nothing here may stop the follower
            self.malformed += 1
            log.warning("skipped control record @%d: %s", rec.offset, type(exc).__name__)
            if self._caught_up and self._on_malformed is not None:
                self._on_malformed(rec, exc)
            return
        now = now_ms()
        self.state.apply(key, record, now=now)
        self.state.expire(now=now)
        if self._on_change is not None:
            self._on_change(key)


async def _produce(kafka: KafkaSettings, topic: str, key: bytes, value: bytes) -> None:
    producer = idempotent_producer(kafka)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers())
    except AUTHORIZATION_ERRORS as exc:
        raise kafka.authorization_error(exc, what=f"write to topic {topic!r}") from exc
    finally:
        await producer.stop()


async def read_routes(kafka: KafkaSettings, topic: str) -> dict[str, RouteSpec]:
    """The current route table (reads the topic to its end)."""
    async with ControlReader(kafka=kafka, topic=topic) as reader:
        return dict(reader.state.routes)


async def publish_route(kafka: KafkaSettings, topic: str, spec: RouteSpec) -> RouteSpec:
    """Make `spec` the model's route; the replaced spec becomes its `previous`."""
    current = (await read_routes(kafka, topic)).get(spec.model)
    stored = spec.model_copy(
        update={
            "revision": (current.revision + 1) if current else 1,
            "ts_ms": now_ms(),
            # One level of history: enough to roll back, and the record stays small.
            "previous": current.model_copy(update={"previous": None}) if current else None,
        }
    )
    await _produce(kafka, topic, stored.key(), encode(stored))
    return stored


async def rollback_route(kafka: KafkaSettings, topic: str, model: str) -> RouteSpec:
    """Restore the model's previous route (a second rollback undoes the first)."""
    current = (await read_routes(kafka, topic)).get(model)
    if current is None or current.previous is None:
        raise NoEarlierRouteError(
            f"model {model!r} has no earlier route to roll back to; "
            "see `sluicegate route show` and set one with `sluicegate route set`"
        )
    return await publish_route(kafka, topic, current.previous)


async def publish_cancel(kafka: KafkaSettings, topic: str, request_id: str) -> Cancel:
    cancel = Cancel(request_id=request_id, ts_ms=now_ms())
    await _produce(kafka, topic, cancel.key(), encode(cancel))
    return cancel
