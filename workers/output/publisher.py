"""Publishing a worker's replies through its `Delivery`.

One `publish` per batch (or per single reply: a refusal, an expiry): every
reply's result and DLQ record go to the delivery together, their
acknowledgements awaited together, and the batch's own telemetry event
rides with the last reply's input (`Delivery.attach`). The batch event
carries its members' request telemetry as arrays (`TelemetryEvent.members`):
one telemetry record per batch, not one per request. A reply published
without a batch (a refusal, an expiry), or whose result was replaced on the
way (`reply_to_unwritable`), gets a request event of its own, as before.
Each message carries its request's (or batch's) trace context.

A result bound for a `reply_to` that does not exist, may not be written or
refuses the record (`runtime.destinations`: checked before the produce, and
classified `permanent()` when the produce fails) is answered
`reply_to_unwritable` on the results topic instead, with a DLQ record; the
worker goes on. Other produce failures propagate (the engine stops and the
record is redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import INVALID_SPAN, Span

from sluicegate.runtime.destinations import Destinations, permanent, unwritable
from sluicegate.runtime.records import Record
from sluicegate.runtime.transactions import Outgoing
from sluicegate.schemas.codec import Headers, encode
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import InferenceResult, Status, TelemetryEvent
from sluicegate.schemas.settings import TopicSettings

from ..answers import Answers
from ..quarantine import Quarantine
from ..tracing import WorkerObserver
from .delivery import Delivery

__all__ = ["Publisher", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One input record's reply: its result (None without a recoverable request_id), DLQ record."""

    record: Record
    result: InferenceResult | None
    dlq: DeadLetter | None
    reply_to: str | None
    span: Span = INVALID_SPAN  # the request's span (workers/tracing.py)
    arrived: float | None = None  # engine clock, seconds
    cost: Cost | None = None  # the request's real cost, for its telemetry event


class Publisher:
    """Hands replies to the delivery, which tracks and commits their offsets."""

    def __init__(
        self,
        *,
        delivery: Delivery,
        topics: TopicSettings,
        answers: Answers,
        observer: WorkerObserver,
        clock: Callable[[], float],
        destinations: Destinations | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        self._quarantine = quarantine
        self._delivery = delivery
        self._destinations = destinations
        self._topics = topics
        self.answers = answers  # replaced once the model version is known
        self._obs = observer
        self._clock = clock
        self.results_produced = 0

    async def publish(
        self, replies: list[Reply], batch_event: tuple[TelemetryEvent, Span] | None = None
    ) -> None:
        """Publish every reply (together), then the batch's telemetry event, if any."""
        results = self._topics.results
        plain: list[tuple[int, Reply]] = []  # bound for the results topic: delivered together
        routed: list[tuple[int, Reply]] = []  # a reply_to may refuse the record (`_answer`)
        for i, r in enumerate(replies):
            on_results = r.result is None or (r.reply_to or results) == results
            (plain if on_results else routed).append((i, r))
        members: list[_Member | None] | None = None
        if batch_event is not None and replies:
            members = [None] * len(replies)
        together = [self._deliver_together(plain, members)] if plain else []
        if routed:
            await asyncio.gather(
                *together,
                *(self._one(r, None if members is None else (members, i)) for i, r in routed),
            )
        elif together:
            await together[0]
        if batch_event is None or members is None:
            return
        event, span = batch_event
        event = _with_members(event, [m for m in members if m is not None])
        message = Outgoing(
            topic=self._topics.telemetry,
            value=encode(event),
            headers=self._obs.telemetry_headers(span),
            required=False,
        )
        await self._delivery.attach(replies[-1].record, message)

    async def _one(self, reply: Reply, fold: _Fold | None) -> None:
        await self._answer(reply, fold)
        if self._quarantine is not None:
            await self._quarantine.end([reply.record])  # answered: no longer a suspect

    async def _answer(self, reply: Reply, fold: _Fold | None) -> None:
        topic = reply.reply_to or self._topics.results
        if reply.result is None or topic == self._topics.results:
            await self._deliver(reply, fold)
            return
        dest = self._destinations
        if dest is not None and not await dest.writable(topic):
            await self._deliver(self._unwritable(reply, "the topic does not exist or is refused"))
            return
        try:
            await self._deliver(reply, fold)
        except Exception as exc:
            if not permanent(exc):
                raise
            if dest is not None:
                dest.refused(topic)
            await self._deliver(self._unwritable(reply, repr(exc)))

    def _unwritable(self, reply: Reply, reason: str) -> Reply:
        """The reply to send instead when its reply_to cannot take the result."""
        assert reply.result is not None and reply.reply_to is not None
        rec = reply.record
        letter = unwritable(rec, reply.result, reply.reply_to, reason)
        result = self.answers.undecodable(letter.request_id or "", letter.code, letter.message)
        return Reply(rec, result, letter, None, reply.span, reply.arrived)

    async def _deliver(self, reply: Reply, fold: _Fold | None = None) -> None:
        if reply.result is not None:
            topic = reply.reply_to or self._topics.results
            with self._obs.result_send(reply.span, topic, reply.result) as hdrs:
                out = self._messages(reply, hdrs, own_event=fold is None)
                await self._delivery.publish(reply.record, out)
            if fold is not None:  # delivered: its telemetry rides in the batch event's arrays
                members, at = fold
                members[at] = _member(reply.result, reply.cost)
        else:
            await self._delivery.publish(reply.record, self._messages(reply, [], own_event=False))
        self._answered(reply)

    async def _deliver_together(
        self, replies: list[tuple[int, Reply]], members: list[_Member | None] | None
    ) -> None:
        """`_deliver` for replies bound for the results topic, in one delivery call.

        What each reply sends is what `_deliver` sends; their acknowledgements
        are awaited together, without a task per reply (the worker's hot path).
        """
        with contextlib.ExitStack() as sends:
            items = []
            for _, reply in replies:
                hdrs: Headers = []
                if reply.result is not None:
                    hdrs = sends.enter_context(
                        self._obs.result_send(reply.span, self._topics.results, reply.result)
                    )
                out = self._messages(reply, hdrs, own_event=members is None)
                items.append((reply.record, out))
            await self._delivery.publish_many(items)
        for at, reply in replies:
            if members is not None and reply.result is not None:
                members[at] = _member(reply.result, reply.cost)
            self._answered(reply)
        if self._quarantine is not None:
            await self._quarantine.end([reply.record for _, reply in replies])

    def _messages(self, reply: Reply, hdrs: Headers, *, own_event: bool) -> list[Outgoing]:
        """What `reply` produces: result, request telemetry (`own_event`), DLQ record."""
        if reply.result is None:
            assert reply.dlq is not None, "a reply without a result is a dead letter"
            return [self._dead_letter(reply.record, reply.dlq)]
        topic = reply.reply_to or self._topics.results
        rid = reply.result.request_id
        out = [
            Outgoing(
                topic=topic, value=encode(reply.result), key=rid.encode(), headers=hdrs, answers=rid
            )
        ]
        if own_event:
            # Request telemetry: best effort at least once, in the transaction otherwise.
            out.append(
                Outgoing(
                    topic=self._topics.telemetry,
                    value=encode(self.answers.request_event(reply.result, reply.cost)),
                    headers=self._obs.telemetry_headers(reply.span),
                    required=False,
                )
            )
        if reply.dlq is not None:
            out.append(self._dead_letter(reply.record, reply.dlq))
        return out

    def _answered(self, reply: Reply) -> None:
        process_s = 0.0 if reply.arrived is None else self._clock() - reply.arrived
        self._obs.answered(reply.span, reply.result, process_s=process_s)
        if reply.result is not None:
            self.results_produced += 1

    def _dead_letter(self, rec: Record, dlq: DeadLetter) -> Outgoing:
        return Outgoing(
            topic=self._topics.dlq,
            value=rec.value,
            key=rec.key,
            headers=list(rec.headers) + dlq.to_headers(),
        )


# A batch member's request telemetry: request_id, status, queue_ms, tokens, pixels.
_Member = tuple[str, Status, float, int, int]
# Where `_deliver` leaves a member's telemetry instead of sending it: (slots, index).
_Fold = tuple[list["_Member | None"], int]


def _member(result: InferenceResult, cost: Cost | None) -> _Member:
    tokens, pixels = (0, 0) if cost is None else (cost.tokens, cost.pixels)
    return (result.request_id, result.status, result.timings.queue_ms, tokens, pixels)


def _with_members(event: TelemetryEvent, members: list[_Member]) -> TelemetryEvent:
    """`event` carrying its members' request telemetry as arrays (`TelemetryEvent.members`)."""
    return event.model_copy(
        update={
            "request_ids": [m[0] for m in members],
            "statuses": [m[1] for m in members],
            "member_queue_ms": [m[2] for m in members],
            "member_tokens": [m[3] for m in members],
            "member_pixels": [m[4] for m in members],
        }
    )
