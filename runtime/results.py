"""The one builder of `InferenceResult`s, for every process that answers requests.

A worker answers what it ran or refused; the router answers what it refused,
rejected or served from its cache. Both label each result with who produced
it (`worker`, and for a worker its `pool` and `model_version`) and stamp
`produced_ms` and `timings.total_ms` from the same clock reading. Pure
construction, no I/O.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from sluicegate.schemas.models import (
    ErrorInfo,
    InferenceRequest,
    InferenceResult,
    Status,
    Timings,
)

from .clock import now_ms


def router_label() -> str:
    """The `worker` label of results the router answers itself."""
    return f"router:{socket.gethostname()}:{os.getpid()}"


def total_ms(request: InferenceRequest) -> float | None:
    """Milliseconds since the client created `request`, when it said."""
    return _since(request.created_ms, now_ms())


def _since(created_ms: int | None, now: int) -> float | None:
    return None if created_ms is None else float(now - created_ms)


@dataclass(frozen=True, kw_only=True)
class ResultBuilder:
    """Builds one answerer's results; every result carries its labels."""

    worker: str
    # The model a worker serves; "" for the router, which names each request's own.
    model: str = ""
    pool: str = ""
    model_version: str = ""
    precision: str = ""  # of the variant that ran (fp32, fp16, bf16, int8)
    device_kind: str = ""  # cpu, cuda or rocm

    def result(
        self,
        request_id: str,
        status: Status,
        *,
        model: str | None = None,
        outputs: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
        timings: Timings | None = None,
        created_ms: int | None = None,
    ) -> InferenceResult:
        """A result; without `timings`, only `total_ms` is set (from `created_ms`)."""
        now = now_ms()
        return InferenceResult(
            request_id=request_id,
            status=status,
            model=self.model if model is None else model,
            outputs=outputs or {},
            error=error,
            timings=timings or Timings(total_ms=_since(created_ms, now)),
            model_version=self.model_version,
            precision=self.precision,
            device_kind=self.device_kind,
            pool=self.pool,
            worker=self.worker,
            produced_ms=now,
        )

    def failure(
        self,
        request_id: str,
        *,
        status: Status,
        code: str,
        message: str,
        model: str | None = None,
        timings: Timings | None = None,
        created_ms: int | None = None,
        retry_after_s: float | None = None,
    ) -> InferenceResult:
        """A result that carries an error (`code` from `schemas.errors.ErrorCode`)."""
        error = ErrorInfo(code=code, message=message, retry_after_s=retry_after_s)
        return self.result(
            request_id, status, model=model, error=error, timings=timings, created_ms=created_ms
        )
