"""The records a worker writes: results, dead letters and telemetry events.

Pure construction, no I/O: the engine decides when to send them. Results are
built by `runtime.results.ResultBuilder`, the builder the router uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.records import Record
from sluicegate.runtime.results import ResultBuilder
from sluicegate.schemas.codec import recover_request_id
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import (
    ErrorInfo,
    InferenceRequest,
    InferenceResult,
    Status,
    TelemetryEvent,
    Timings,
)

from .variants import Variant


@dataclass(frozen=True, kw_only=True)
class Answers:
    """Builds this worker's records; every result names model, version, pool and worker."""

    model: str
    pool: str
    worker: str
    model_version: str = ""
    precision: str = ""
    device_kind: str = ""

    @cached_property
    def _results(self) -> ResultBuilder:
        return ResultBuilder(
            worker=self.worker,
            model=self.model,
            pool=self.pool,
            model_version=self.model_version,
            precision=self.precision,
            device_kind=self.device_kind,
        )

    def ran(self, variant: Variant | None) -> Answers:
        """These answers labelled with what runs: `variant`'s version, precision and device."""
        if variant is None:
            return self
        return replace(
            self,
            model_version=variant.version,
            precision=variant.precision,
            device_kind=variant.device_kind,
        )

    def result(
        self,
        request: InferenceRequest,
        status: Status,
        *,
        outputs: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
        timings: Timings | None = None,
    ) -> InferenceResult:
        return self._results.result(
            request.request_id,
            status,
            outputs=outputs,
            error=error,
            timings=timings,
            created_ms=request.created_ms,
        )

    def failure(
        self,
        request: InferenceRequest,
        status: Status,
        code: str,
        message: str,
        timings: Timings | None = None,
    ) -> InferenceResult:
        return self._results.failure(
            request.request_id,
            status=status,
            code=code,
            message=message,
            timings=timings,
            created_ms=request.created_ms,
        )

    def undecodable(self, request_id: str, code: str, message: str) -> InferenceResult:
        """The error result of a record that never became an `InferenceRequest`."""
        return self._results.failure(request_id, status=Status.ERROR, code=code, message=message)

    def request_event(self, result: InferenceResult, cost: Cost | None = None) -> TelemetryEvent:
        """The per-request event: the result's labels, timings and the request's real cost."""
        return TelemetryEvent(
            kind="request",
            model=result.model,
            pool=result.pool,
            worker=self.worker,
            ts_ms=result.produced_ms,
            model_version=result.model_version,
            precision=result.precision,
            device_kind=result.device_kind,
            tokens=0 if cost is None else cost.tokens,
            pixels=0 if cost is None else cost.pixels,
            status=result.status,
            request_id=result.request_id,
            batch_size=result.timings.batch_size,
            queue_ms=result.timings.queue_ms,
            compute_ms=result.timings.compute_ms,
        )

    def batch_event(
        self, costs: Sequence[Cost], *, padded_cost: int, queue_ms: float, compute_ms: float
    ) -> TelemetryEvent:
        return TelemetryEvent(
            kind="batch",
            model=self.model,
            pool=self.pool,
            worker=self.worker,
            ts_ms=now_ms(),
            model_version=self.model_version,
            precision=self.precision,
            device_kind=self.device_kind,
            batch_size=len(costs),
            tokens=sum(c.tokens for c in costs),
            pixels=sum(c.pixels for c in costs),
            padded_cost=padded_cost,
            queue_ms=round(queue_ms, 3),
            compute_ms=round(compute_ms, 3),
        )


def dead_letter(
    rec: Record, exc: Exception, stage: str, request_id: str | None = None
) -> DeadLetter:
    return DeadLetter(
        code=getattr(exc, "code", ErrorCode.ERROR),
        message=str(exc),
        error_class=type(exc).__name__,
        stage=stage,
        source_topic=rec.topic,
        source_partition=rec.partition,
        source_offset=rec.offset,
        request_id=request_id or recover_request_id(rec.value, rec.key),
    )
