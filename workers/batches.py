"""Running one batch: the backend call (through `Resilient`), then its replies.

Each job's outcome becomes one `Reply` (ok, or the error that request alone
gets, with a DLQ record when retrying can never help), in batch order, and
the batch gets one telemetry event (carrying its members' request
telemetry as arrays), a DEBUG log line and its span's end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import Span

from sluicegate.runtime.results import total_ms
from sluicegate.schemas.models import Status, TelemetryEvent, Timings

from .answers import Answers, dead_letter
from .backends.base import Outputs
from .batcher import Batch
from .errors import BackendError
from .output import Reply
from .resilience import Resilient
from .scheduler import Job
from .tracing import WorkerObserver, label_variant

log = logging.getLogger("sluicegate.worker")


@dataclass(frozen=True)
class BatchDone:
    replies: list[Reply]  # one per job, in batch order
    event: TelemetryEvent  # the batch's telemetry
    span: Span  # the batch's span, ended


class BatchStage:
    """Runs batches for one worker; `answers` is replaced once the model version is known."""

    def __init__(
        self,
        *,
        resilient: Resilient,
        answers: Answers,
        observer: WorkerObserver,
        clock: Callable[[], float],
    ) -> None:
        self._resilient = resilient
        self.answers = answers
        self._obs = observer
        self._clock = clock

    async def run(self, batch: Batch[Job]) -> BatchDone:
        started = self._clock()
        jobs = batch.items
        variant = jobs[0].variant  # one per batch: the scheduler never mixes them
        answers = self.answers.ran(variant)
        span = self._obs.batch_started(
            [job.span for job in jobs], [(started - job.arrived) * 1000 for job in jobs]
        )
        label_variant(span, variant)
        with self._obs.backend_call(span):
            outcomes = await self._resilient.infer(
                [job.admitted.inputs for job in jobs], variant=variant
            )
        compute_ms = (self._clock() - started) * 1000
        replies = [
            self._reply(
                answers,
                job,
                outcome,
                Timings(
                    queue_ms=round((started - job.arrived) * 1000, 3),
                    compute_ms=round(compute_ms, 3),
                    batch_size=len(jobs),
                    total_ms=total_ms(job.admitted.request),
                ),
            )
            for job, outcome in zip(jobs, outcomes, strict=True)
        ]
        errors = [o.code for o in outcomes if isinstance(o, BackendError)]
        event = self._finished(answers, batch, compute_ms, started, span, errors)
        return BatchDone(replies, event, span)

    def _reply(
        self, answers: Answers, job: Job, outcome: Outputs | BackendError, timings: Timings
    ) -> Reply:
        request, cost = job.admitted.request, job.admitted.cost
        if isinstance(outcome, BackendError):
            result = answers.failure(request, Status.ERROR, outcome.code, str(outcome), timings)
            dlq = None if outcome.retriable else dead_letter(job.record, outcome, "infer")
            return Reply(job.record, result, dlq, request.reply_to, job.span, job.arrived, cost)
        ok = answers.result(request, Status.OK, outputs=outcome, timings=timings)
        return Reply(job.record, ok, None, request.reply_to, job.span, job.arrived, cost)

    def _finished(
        self,
        answers: Answers,
        batch: Batch[Job],
        compute_ms: float,
        started: float,
        span: Span,
        errors: list[str],
    ) -> TelemetryEvent:
        event = answers.batch_event(
            [job.admitted.cost for job in batch.items],
            padded_cost=batch.padded_cost,
            queue_ms=max(started - a for a in batch.arrivals) * 1000,
            compute_ms=compute_ms,
        )
        # DEBUG: an INFO line per batch was ~5% of the null worker's samples; the
        # batch's telemetry event and span carry the same figures.
        log.debug(
            "batch of %d (padded cost %d, real %d, %.0f%% padding) in %.0f ms",
            len(batch),
            batch.padded_cost,
            batch.real_cost,
            100 * batch.padding_waste,
            compute_ms,
        )
        self._obs.batch_finished(
            span,
            size=len(batch),
            tokens=event.tokens or 0,
            pixels=event.pixels or 0,
            padded_cost=batch.padded_cost,
            padding=batch.padding_waste,
            backend_s=compute_ms / 1000,
            errors=errors,
        )
        return event
