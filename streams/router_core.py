"""The router's decisions, apart from its Kafka loop: records in, records to produce out.

`decode_all()` decodes, validates, masks and prices a poll's records (in the
router's executor: it tokenizes and reads image headers). `RouterCore.handle()`
then takes one record and its outcome and answers what to produce, in order:
a drift alarm if the inputs moved, then exactly one of an error result and a
DLQ record (refused), a rejection (cancelled, over quota), a cached result,
or the work record (plus its shadow copy). The core does no I/O: the loop in
`router.py` sends what it answers, and state (routes, cancels, cache, pool
health) comes from the policy objects it was given, which the loop's
followers feed through `offer_result()` / `offer_rollup()`. It is not
thread-safe: `handle()` runs on the event loop.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Tracer

from sluicegate.runtime import tracing
from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.destinations import check_reply_to, reply_topic, unwritable
from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.records import Record
from sluicegate.runtime.results import ResultBuilder, router_label
from sluicegate.schemas.codec import (
    DEFAULT_LIMITS,
    WireLimits,
    decode_request,
    decode_result,
    encode,
    headers,
)
from sluicegate.schemas.codec import recover_request_id as recover_id
from sluicegate.schemas.control import (
    POOL_HEADER,
    PRECISION_HEADER,
    SHADOW_OF_HEADER,
    VERSION_HEADER,
)
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode, InvalidReplyToError, WireError
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status
from sluicegate.schemas.settings import TopicSettings

from .cache import ResultCache, answer_from, content_key
from .coalesce import Coalescer, Waiter
from .control import ControlState
from .drift import DriftMonitor
from .health import PoolHealth
from .ingress import Prepared, Refused, Screened, price, screen
from .pii import PiiMasker
from .quota import Refusal, TenantQuotas
from .records import WindowRollup, decode_rollup
from .routing import Decision, RoutingSettings, decide

log = logging.getLogger("sluicegate.router")
_ROUTE_HEADERS = {VERSION_HEADER, POOL_HEADER, PRECISION_HEADER, SHADOW_OF_HEADER}
_TRACE_HEADERS = {"traceparent", "tracestate"}

Outcome = Prepared | Refused | WireError


@dataclass(frozen=True, kw_only=True)
class Produce:
    """One record for the loop to send, as `producer.send(topic, value, key=, headers=)`."""

    topic: str
    value: bytes | None  # None: a tombstone
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    # A result bound for a request's reply_to: if that topic cannot take it, the loop
    # answers `reply_to_unwritable` on the results topic instead (`runtime.destinations`).
    reply: InferenceResult | None = None
    # The request id a result answers or a work record carries (exactly-once
    # delivery answers it with an error if the record can never be written).
    answers: str | None = None


def decode_all(
    records: Sequence[Record],
    *,
    masker: PiiMasker,
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
    sources: ImageSources | None = None,
) -> list[Outcome]:
    """Decode, validate, mask and price each record; one outcome per record, in order.

    The texts of every request that got that far are tokenized in one call (the
    tokenizer's batch, which runs without the GIL), then each request is priced.
    """
    screened: list[Screened | Refused | WireError] = []
    for rec in records:
        try:
            request = decode_request(rec.value, list(rec.headers), limits=limits)
            screened.append(
                screen(request, masker=masker, limits=limits, sources=sources, value=rec.value)
            )
        except (WireError, Refused) as exc:
            screened.append(exc)
    texts = [t for s in screened if isinstance(s, Screened) for t in s.request.texts]
    counts = counter.count(texts)
    out: list[Outcome] = []
    at = 0
    for s in screened:
        if not isinstance(s, Screened):
            out.append(s)
            continue
        n = len(s.request.texts)
        try:
            out.append(price(s, counts[at : at + n], limits=limits))
        except Refused as exc:
            out.append(exc)
        at += n
    return out


class RouterCore:
    """What the router produces for each record; `stats` counts outcomes (routed, cached...).

    `cache` None turns the result cache off. `clock` gives Unix epoch ms.
    """

    def __init__(
        self,
        *,
        topics: TopicSettings,
        routing: RoutingSettings,
        control: ControlState,
        quotas: TenantQuotas,
        health: PoolHealth,
        drift: DriftMonitor,
        cache: ResultCache | None,
        tracer: Tracer | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._topics = topics
        self._routing = routing
        self._control = control
        self._quotas = quotas
        self._health = health
        self._drift = drift
        self._cache = cache
        self._tracer = tracer or tracing.get_tracer(None)
        self._clock = clock
        self._answers = ResultBuilder(worker=router_label())
        self.stats: Counter[str] = Counter()
        self._letters: list[Produce] = []  # DLQ records of malformed control records
        self.coalescer = Coalescer()
        self._released: list[tuple[Record, list[Produce]]] = []

    def handle(self, rec: Record, outcome: Outcome) -> list[Produce]:
        """The records to produce for `rec`, in the order to send them."""
        if isinstance(outcome, WireError):
            return self._refuse(rec, outcome, None)
        if isinstance(outcome, Refused):
            return self._refuse(rec, outcome.error, outcome.request)
        request, now = outcome.request, self._clock()
        try:
            check_reply_to(request.reply_to, self._topics)
        except InvalidReplyToError as exc:
            return self._refuse(rec, exc, request)
        rid = request.request_id
        alarms = self._observe(request.model, outcome.features, now)
        if self._control.cancelled(rid):
            self.stats["cancelled"] += 1
            return [
                *alarms,
                self._reply(
                    request, Status.REJECTED, ErrorCode.CANCELLED, ErrorCode.CANCELLED.message
                ),
            ]
        key = content_key(request) if self._cache is not None else ""
        if self._cache is not None:
            hit = self._cache.lookup(key)
            if hit is not None:
                self.stats["cached"] += 1
                answer = answer_from(hit, request, now_ms=now)
                return [*alarms, self._result(answer, request)]
            leader = self.coalescer.leader(key)
            if leader is not None and leader != rid and not request.reply_to:
                # Answered when the leader's result comes (`offer_result`); nothing now.
                waiter = Waiter(rec=rec, outcome=outcome, alarms=alarms, parked_ms=now)
                self.coalescer.park(leader, waiter)
                self.stats["coalesced"] += 1
                return []
        return [*alarms, *self._admit(rec, outcome, key, now)]

    def _admit(self, rec: Record, outcome: Prepared, key: str, now: int) -> list[Produce]:
        """Quota, then the work record (and its shadow copy) for an admitted request."""
        request, rid = outcome.request, outcome.request.request_id
        refusal = self._quotas.admit(request.tenant, outcome.cost)
        if refusal is not None:
            self.stats["over_quota"] += 1
            return [self._over_quota(request, refusal)]
        sticky = rec.key.decode(errors="replace") if rec.key else rid
        decision = decide(
            request,
            key=sticky,
            cost=outcome.cost,
            spec=self._control.route(request.model),
            health=self._health,
            now_ms=now,
            settings=self._routing,
            topics=self._topics,
        )
        parent = tracing.extract(list(rec.headers))
        with tracing.process_span(
            self._tracer, rec.topic, parent=parent, record=rec, request_id=rid
        ) as span:
            # With tracing on, the work record's trace parent is this hop's span;
            # with it off, the client's W3C context passes on unchanged, so a
            # trace begun by any producer (kcat, kafkajs, Java) survives this hop.
            passed = [(k, v) for k, v in rec.headers if k not in _ROUTE_HEADERS]
            if span.get_span_context().is_valid:
                passed = [(k, v) for k, v in passed if k not in _TRACE_HEADERS]
                tracing.inject(passed, trace.set_span_in_context(span))
            out = [
                Produce(
                    topic=decision.topic,
                    value=outcome.value or encode(request),
                    key=rec.key,
                    headers=passed + _routing(decision, decision.version),
                    answers=rid,
                ),
            ]
            self.stats["routed"] += 1
            self.stats[f"pool:{decision.pool}"] += 1
            self.stats[f"version:{decision.version}"] += 1
            if self._cache is not None:
                self._cache.expect(rid, key)
                if not request.reply_to:  # its result shows on the result topic
                    self.coalescer.lead(key, rid)
            if decision.shadow is not None:
                shadow = request.model_copy(update={"reply_to": self._topics.shadow_results})
                shadow_headers = _routing(decision, decision.shadow, shadow_of=decision.version)
                out.append(
                    Produce(
                        topic=decision.topic,
                        value=encode(shadow),
                        key=rec.key,
                        headers=passed + shadow_headers,
                    )
                )
                self.stats["shadowed"] += 1
            return out

    def malformed_control(self, rec: Record, exc: Exception) -> None:
        """A control record that could not be read: its DLQ record goes out with the
        next `tombstones()` (keyed by its position, so copies from several routers
        are recognisable as one)."""
        self.stats["control_malformed"] += 1
        code = ErrorCode.CONTROL_MALFORMED
        letter = DeadLetter(
            code=code,
            message=f"{type(exc).__name__}: {exc}"[:300] + f"; {code.message}",
            error_class=type(exc).__name__,
            stage="control",
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
        )
        key = f"{rec.topic}/{rec.partition}/{rec.offset}".encode()
        self._letters.append(
            Produce(topic=self._topics.dlq, value=rec.value, key=key, headers=letter.to_headers())
        )

    def tombstones(self) -> list[Produce]:
        """Tombstones for the cancels that expired since the last call (each at most once),
        after the DLQ records of malformed control records seen since."""
        self._control.expire(now=self._clock())
        topic = self._topics.control
        letters, self._letters = self._letters, []
        return letters + [Produce(topic=topic, value=None, key=f"cancel/{rid}".encode())
                          for rid in self._control.take_stale()]  # fmt: skip

    # -- what the followers see ---------------------------------------------

    def offer_result(self, rec: Record) -> None:
        """A record of the result topic: fills the cache and releases the requests parked
        behind it (call only with a cache)."""
        assert self._cache is not None
        try:
            result = decode_result(rec.value, list(rec.headers))
        except WireError:
            return  # not ours to judge; other producers may share the topic
        self._cache.offer(result)
        for w in self.coalescer.settle(result.request_id):
            self._release(w, result)

    def take_released(self) -> list[tuple[Record, list[Produce]]]:
        """Parked requests answered since the last call (or waiting too long, now routed):
        each record and what to produce for it."""
        for w in self.coalescer.overdue(self._clock()):
            self._release(w, None)
        released, self._released = self._released, []
        return released

    def _release(self, w: Waiter, result: InferenceResult | None) -> None:
        now = self._clock()
        if result is not None and result.status is Status.OK:
            self.stats["coalesced_answered"] += 1
            answer = answer_from(result, w.request, now_ms=now)
            out = [self._result(answer, w.request)]
        else:  # the leader failed, expired or never answered: route this one after all
            out = self._admit(w.rec, w.outcome, content_key(w.request), now)
        self._released.append((w.rec, [*w.alarms, *out]))

    def offer_rollup(self, rec: Record) -> None:
        """A record of the rollup topic: window rollups feed pool health."""
        try:
            rollup = decode_rollup(rec.value, list(rec.headers))
        except (WireError, ValueError):
            return
        if isinstance(rollup, WindowRollup):
            self._health.observe(rollup)

    # -- answers ------------------------------------------------------------

    def _observe(self, model: str, features: dict[str, float], now: int) -> list[Produce]:
        """Feed the drift monitor; its alarms go on the rollup topic."""
        out = []
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
                topic = self._topics.telemetry_rollup
                out.append(Produce(topic=topic, value=encode(event), headers=headers()))
        return out

    def _refuse(
        self, rec: Record, exc: WireError, request: InferenceRequest | None
    ) -> list[Produce]:
        """Error result (if the request id is known) and a DLQ record, for a refused record.

        The DLQ value is the original bytes when they did not decode, else the
        masked request re-encoded: no unmasked text leaves the router.
        """
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
        out = [
            Produce(
                topic=self._topics.dlq,
                value=value,
                key=rec.key,
                headers=passed + letter.to_headers(),
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
            out.append(self._result(result, request))
        return out

    def unwritable(
        self, rec: Record, request: InferenceRequest | None, refused: Produce, reason: str
    ) -> list[Produce]:
        """`refused` (a result for a reply_to) cannot be written: an error result on the
        results topic (`reply_to_unwritable`) and a DLQ record, instead."""
        assert refused.reply is not None, "only results bound for a reply_to have a fallback"
        self.stats[f"refused:{ErrorCode.REPLY_TO_UNWRITABLE}"] += 1
        letter = unwritable(rec, refused.reply, refused.topic, reason)
        rid, code, message = refused.reply.request_id, letter.code, letter.message
        log.warning("reply_to unwritable for %s[%d]@%d", rec.topic, rec.partition, rec.offset)
        value = rec.value if request is None else encode(request)
        passed = [(k, v) for k, v in rec.headers if not k.startswith("sg-dlq-")]
        result = self._answers.failure(
            rid,
            model=refused.reply.model,
            status=Status.ERROR,
            code=code,
            message=message,
            created_ms=request.created_ms if request is not None else None,
        )
        return [
            Produce(
                topic=self._topics.dlq,
                value=value,
                key=rec.key,
                headers=passed + letter.to_headers(),
            ),
            Produce(
                topic=self._topics.results,
                value=encode(result),
                key=rid.encode(),
                headers=headers(),
            ),
        ]

    def _over_quota(self, request: InferenceRequest, refusal: Refusal) -> Produce:
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
        return self._reply(
            request, Status.REJECTED, ErrorCode.OVER_QUOTA, message, retry_after=retry
        )

    def _reply(
        self,
        request: InferenceRequest,
        status: Status,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
    ) -> Produce:
        result = self._answers.failure(
            request.request_id,
            model=request.model,
            status=status,
            code=code,
            message=message,
            created_ms=request.created_ms,
            retry_after_s=retry_after,
        )
        return self._result(result, request)

    def _result(self, result: InferenceResult, request: InferenceRequest | None) -> Produce:
        topic = reply_topic(request.reply_to if request is not None else None, self._topics)
        return Produce(
            topic=topic,
            value=encode(result),
            key=result.request_id.encode(),
            headers=headers(),
            reply=result if topic != self._topics.results else None,
            answers=result.request_id,
        )


def _routing(
    decision: Decision, version: str, *, shadow_of: str | None = None
) -> list[tuple[str, bytes]]:
    """The routing headers of a work record: version, pool, precision (and what it shadows)."""
    out = [
        (VERSION_HEADER, version.encode()),
        (POOL_HEADER, decision.pool.encode()),
        (PRECISION_HEADER, decision.precision.encode()),
    ]
    if shadow_of is not None:
        out.append((SHADOW_OF_HEADER, shadow_of.encode()))
    return out
