"""The ingress router: `sg.requests` in, `sg.work.<model>.<pool>` out.

A plain aiokafka loop (one consumer in group `sg.router`, one idempotent
producer): faust agents were reported >= 10x slower than a plain loop on
this hop, and `sluicegate bench-router` measures the loop against a bare
relay. For each record: decode and validate (shared codec), mask PII, check
and price against the model, then in order: cancelled? cached? over the
tenant's quota? and finally route (pool, precision, version, shadow copy).
Every record ends in exactly one of: forwarded to a work topic, or answered
by the router itself (error + DLQ record, rejected, or a cached result).

Offsets are committed after everything a poll produced is acknowledged
(at-least-once: a crash re-routes the last poll's records).

State (routes, cancels, cached results, pool health) is in memory, rebuilt
from topics at start: `sg.control` (compacted, read from the beginning),
`sg.results` (from the end, for the cache), `sg.telemetry.rollup` (from
`health_ttl_s` back, for pool health).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from sluicegate.runtime import tracing
from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.kafka import OnFirstAssignment, idempotent_producer
from sluicegate.runtime.lifecycle import Service
from sluicegate.runtime.records import Record
from sluicegate.runtime.results import ResultBuilder, router_label
from sluicegate.schemas.codec import WireLimits, decode_request, decode_result, encode, headers
from sluicegate.schemas.codec import recover_request_id as recover_id
from sluicegate.schemas.control import (
    POOL_HEADER,
    PRECISION_HEADER,
    SHADOW_OF_HEADER,
    VERSION_HEADER,
)
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode, WireError
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status

from .cache import ResultCache, answer_from, content_key
from .control import ControlReader, ControlState
from .drift import DriftMonitor
from .health import PoolHealth
from .ingress import Prepared, Refused, prepare
from .pii import PiiMasker
from .quota import Refusal, TenantQuotas
from .records import WindowRollup, decode_rollup
from .router_settings import RouterSettings
from .routing import decide

log = logging.getLogger("sluicegate.router")
_ROUTE_HEADERS = {VERSION_HEADER, POOL_HEADER, PRECISION_HEADER, SHADOW_OF_HEADER}
_TRACE_HEADERS = {"traceparent", "tracestate"}


Outcome = Prepared | Refused | WireError


class Router(Service):
    """Routes until stopped; ready once it joined its group.

    `stats` counts outcomes (routed, cached, rejected...).
    """

    def __init__(
        self,
        *,
        settings: RouterSettings,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._s = settings
        self._tracer = tracing.get_tracer(tracer_provider)
        self._masker = PiiMasker(settings=settings.pii)
        self._quotas = TenantQuotas(settings=settings.quota)
        self._cache = ResultCache(ttl_s=settings.cache_ttl_s) if settings.cache_ttl_s else None
        r = settings.routing
        self._health = PoolHealth(max_error_rate=r.max_error_rate, ttl_s=r.health_ttl_s)
        self._control = ControlReader(
            kafka=settings.kafka,
            topic=settings.topics.control,
            state=ControlState(cancel_ttl_s=settings.cancel_ttl_s),
        )
        self._answers = ResultBuilder(worker=router_label())
        self._limits = WireLimits(image_root=settings.image_root)
        self._drift = DriftMonitor(settings=settings.drift)
        self._counter: TokenCounter | None = None
        self._producer: AIOKafkaProducer | None = None
        self.stats: Counter[str] = Counter()

    @property
    def control(self) -> ControlReader:
        return self._control

    async def _serve(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        s = self._s
        kafka = s.kafka.client_kwargs()
        executor = ThreadPoolExecutor(s.router_threads, thread_name_prefix="sg-router")
        loop = asyncio.get_running_loop()
        self._counter = await loop.run_in_executor(executor, TokenCounter)
        followers = [
            Follower(
                kafka=s.kafka,
                topic=s.topics.telemetry_rollup,
                handle=self._on_rollup,
                start=now_ms() - int(s.routing.health_ttl_s * 1000),
                name="router-health",
            )
        ]
        if self._cache is not None:
            followers.append(
                Follower(
                    kafka=s.kafka, topic=s.topics.results, handle=self._on_result, name="cache"
                )
            )
        producer = idempotent_producer(s.kafka, linger_ms=2)
        consumer = AIOKafkaConsumer(
            group_id=s.router_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.kafka.max_request_size,
            **kafka,
        )
        await self._control.start()
        try:
            for follower in followers:
                await follower.start()
            await producer.start()
            self._producer = producer
            consumer.subscribe([s.topics.requests], listener=OnFirstAssignment(ready.set))
            await consumer.start()
            log.info("router reading %s as group %s", s.topics.requests, s.router_group_id)
            try:
                while not stop.is_set():
                    for failed in (self._control.failed, *(f.failed for f in followers)):
                        if failed is not None:
                            raise failed
                    await self._poll_once(consumer, executor)
                    await self._tombstone_expired_cancels()
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
            for follower in followers:
                await follower.stop()
            await self._control.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    # -- the loop ---------------------------------------------------------

    async def _poll_once(self, consumer: AIOKafkaConsumer, executor: ThreadPoolExecutor) -> None:
        batches = await consumer.getmany(timeout_ms=200, max_records=self._s.router_max_records)
        records = [rec for recs in batches.values() for rec in recs]
        if not records:
            return
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(executor, self._prepare_all, records)
        sends: list[asyncio.Future[Any]] = []
        for rec, outcome in zip(records, outcomes, strict=True):
            sends += await self._handle(rec, outcome)
        await asyncio.gather(*sends)
        await consumer.commit()

    async def _tombstone_expired_cancels(self) -> None:
        state = self._control.state
        state.expire(now=now_ms())
        stale = state.take_stale()
        if not stale:
            return
        assert self._producer is not None
        topic = self._s.topics.control
        sends = [
            await self._producer.send(topic, None, key=f"cancel/{rid}".encode()) for rid in stale
        ]
        await asyncio.gather(*sends)

    def _prepare_all(self, records: list[Record]) -> list[Outcome]:
        assert self._counter is not None
        out: list[Outcome] = []
        for rec in records:
            try:
                request = decode_request(rec.value, list(rec.headers))
                out.append(
                    prepare(
                        request, masker=self._masker, counter=self._counter, limits=self._limits
                    )
                )
            except (WireError, Refused) as exc:
                out.append(exc)
        return out

    async def _handle(self, rec: Record, outcome: Outcome) -> list[asyncio.Future[Any]]:
        if isinstance(outcome, WireError):
            return await self._refuse(rec, outcome, None)
        if isinstance(outcome, Refused):
            return await self._refuse(rec, outcome.error, outcome.request)
        request, now = outcome.request, now_ms()
        rid = request.request_id
        alarms = await self._observe(request.model, outcome.features, now)
        if self._control.state.cancelled(rid):
            self.stats["cancelled"] += 1
            return [
                *alarms,
                await self._reply(
                    request, Status.REJECTED, ErrorCode.CANCELLED, ErrorCode.CANCELLED.message
                ),
            ]
        key = content_key(request) if self._cache is not None else ""
        if self._cache is not None:
            hit = self._cache.lookup(key)
            if hit is not None:
                self.stats["cached"] += 1
                answer = answer_from(hit, request, now_ms=now)
                return [*alarms, await self._send_result(answer, request)]
        refusal = self._quotas.admit(request.tenant, outcome.cost)
        if refusal is not None:
            self.stats["over_quota"] += 1
            return [*alarms, await self._over_quota(request, refusal)]
        sticky = rec.key.decode(errors="replace") if rec.key else rid
        decision = decide(
            request,
            key=sticky,
            cost=outcome.cost,
            spec=self._control.state.route(request.model),
            health=self._health,
            now_ms=now,
            settings=self._s.routing,
            topics=self._s.topics,
        )
        assert self._producer is not None
        parent = tracing.extract(list(rec.headers))
        with tracing.process_span(
            self._tracer, rec.topic, parent=parent, record=rec, request_id=rid
        ) as span:
            # The work record's trace parent is this hop's span, not the client's.
            passed = [(k, v) for k, v in rec.headers if k not in _ROUTE_HEADERS | _TRACE_HEADERS]
            tracing.inject(passed, trace.set_span_in_context(span))
            route_headers = [
                (VERSION_HEADER, decision.version.encode()),
                (POOL_HEADER, decision.pool.encode()),
                (PRECISION_HEADER, decision.precision.encode()),
            ]
            sends = [
                *alarms,
                await self._producer.send(
                    decision.topic, encode(request), key=rec.key, headers=passed + route_headers
                ),
            ]
            self.stats["routed"] += 1
            self.stats[f"pool:{decision.pool}"] += 1
            self.stats[f"version:{decision.version}"] += 1
            if self._cache is not None:
                self._cache.expect(rid, key)
            if decision.shadow is not None:
                shadow = request.model_copy(update={"reply_to": self._s.topics.shadow_results})
                shadow_headers = [
                    (VERSION_HEADER, decision.shadow.encode()),
                    (POOL_HEADER, decision.pool.encode()),
                    (PRECISION_HEADER, decision.precision.encode()),
                    (SHADOW_OF_HEADER, decision.version.encode()),
                ]
                sends.append(
                    await self._producer.send(
                        decision.topic, encode(shadow), key=rec.key, headers=passed + shadow_headers
                    )
                )
                self.stats["shadowed"] += 1
            return sends

    async def _observe(
        self, model: str, features: dict[str, float], now: int
    ) -> list[asyncio.Future[Any]]:
        """Feed the drift monitor; publish its alarms on the rollup topic."""
        assert self._producer is not None
        sends = []
        for statistic, value in features.items():
            event = self._drift.observe(model, statistic, value, now_ms=now)
            if event is not None:
                self.stats["drift"] += 1
                log.warning(
                    "input drift: %s %s psi %.3f > %.2f",
                    model,
                    statistic,
                    event.psi,
                    event.threshold,
                )
                topic = self._s.topics.telemetry_rollup
                sends.append(await self._producer.send(topic, encode(event), headers=headers()))
        return sends

    # -- answers ----------------------------------------------------------

    async def _refuse(
        self, rec: Record, exc: WireError, request: InferenceRequest | None
    ) -> list[asyncio.Future[Any]]:
        """Error result (if the request id is known) and a DLQ record, for a refused record.

        The DLQ value is the original bytes when they did not decode, else the
        masked request re-encoded: no unmasked text leaves the router.
        """
        assert self._producer is not None
        self.stats[f"refused:{exc.code}"] += 1
        rid = request.request_id if request is not None else recover_id(rec.value, rec.key)
        log.warning(
            "refused %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.code
        )  # the code only: messages may quote the producer's field names, never values
        letter = DeadLetter(
            code=exc.code,
            message=str(exc),
            error_class=type(exc).__name__,
            stage="ingress",
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            request_id=rid,
        )
        value = rec.value if request is None else encode(request)
        passed = [(k, v) for k, v in rec.headers if not k.startswith("sg-dlq-")]
        sends = [
            await self._producer.send(
                self._s.topics.dlq, value, key=rec.key, headers=passed + letter.to_headers()
            )
        ]
        if rid is not None:
            result = self._answers.failure(
                rid,
                model=request.model if request is not None else "",
                status=Status.ERROR,
                code=exc.code,
                message=str(exc),
                created_ms=request.created_ms if request is not None else None,
            )
            sends.append(await self._send_result(result, request))
        return sends

    async def _over_quota(self, request: InferenceRequest, refusal: Refusal) -> asyncio.Future[Any]:
        q = self._quotas.quota(request.tenant)
        never = refusal.retry_after_s == float("inf")
        message = (
            f"tenant {request.tenant!r} is over its quota ({q.rate:.0f} cost units/s, burst "
            f"{q.burst:.0f}; this request costs {refusal.units:.0f}); "
            + (
                "it is larger than the burst: split it or raise the tenant's quota"
                if never
                else f"retry after {refusal.retry_after_s:.2f} s"
            )
        )
        retry = None if never else round(refusal.retry_after_s, 3)
        return await self._reply(
            request, Status.REJECTED, ErrorCode.OVER_QUOTA, message, retry_after=retry
        )

    async def _reply(
        self,
        request: InferenceRequest,
        status: Status,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
    ) -> asyncio.Future[Any]:
        result = self._answers.failure(
            request.request_id,
            model=request.model,
            status=status,
            code=code,
            message=message,
            created_ms=request.created_ms,
            retry_after_s=retry_after,
        )
        return await self._send_result(result, request)

    async def _send_result(
        self, result: InferenceResult, request: InferenceRequest | None
    ) -> asyncio.Future[Any]:
        assert self._producer is not None
        topic = (request.reply_to if request is not None else None) or self._s.topics.results
        future: asyncio.Future[Any] = await self._producer.send(
            topic, encode(result), key=result.request_id.encode(), headers=headers()
        )
        return future

    # -- followers --------------------------------------------------------

    def _on_result(self, rec: Record) -> None:
        assert self._cache is not None
        try:
            self._cache.offer(decode_result(rec.value, list(rec.headers)))
        except WireError:
            return  # not ours to judge; other producers may share the topic

    def _on_rollup(self, rec: Record) -> None:
        try:
            rollup = decode_rollup(rec.value, list(rec.headers))
        except (WireError, ValueError):
            return
        if isinstance(rollup, WindowRollup):
            self._health.observe(rollup)


__all__ = ["Router", "RouterSettings"]
