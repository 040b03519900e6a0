"""Pydantic models of the records that travel on sluicegate's topics.

`InferenceRequest` on `sg.requests` / `sg.work.<model>.<pool>`,
`InferenceResult` on `sg.results` (or the request's `reply_to`),
`TelemetryEvent` on `sg.telemetry`. Times are Unix epoch milliseconds unless
a field's name says otherwise.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

ImageMime = Literal["image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff"]
ParamValue = str | int | float | bool
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
ModelName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9\-]*$")]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ImageInput(_Record):
    """One image, inline (`data` + `mime_type`) or by reference (`uri` + `sha256`).

    A reference is `file:///path`, `s3://bucket/key` or `https://host/path`
    (docs/wire-format.md, "Images"). The router reads its header to price it,
    the worker reads it whole and checks the sha256 before use; remote sources
    must be allowed for the request's tenant.
    """

    data: bytes | None = None
    mime_type: ImageMime | None = None
    uri: str | None = Field(default=None, max_length=2048, pattern=r"^(file|s3|https)://")
    sha256: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.data is None) == (self.uri is None):
            raise ValueError("an image needs exactly one of `data` (inline bytes) or `uri`")
        if self.data is not None and self.mime_type is None:
            raise ValueError("an inline image needs `mime_type` (e.g. image/png)")
        if self.uri is not None and (self.sha256 is None or not _SHA256.match(self.sha256)):
            raise ValueError("an image `uri` needs `sha256`: 64 lowercase hex digits")
        return self

    @classmethod
    def inline(cls, data: bytes, mime_type: ImageMime = "image/png") -> ImageInput:
        return cls(data=data, mime_type=mime_type)

    @classmethod
    def from_file(cls, path: str) -> ImageInput:
        from pathlib import Path

        resolved = Path(path).resolve()
        digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
        return cls(uri=resolved.as_uri(), sha256=digest)


class InferenceRequest(_Record):
    """One inference request: which model, its inputs, and how to answer."""

    request_id: RequestId
    model: ModelName
    texts: list[str] = Field(default_factory=list)
    images: list[ImageInput] = Field(default_factory=list)
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    # Higher runs first inside a batch window; 0 is the default.
    priority: int = Field(default=0, ge=0, le=9)
    # Unix epoch ms after which the request is answered `expired` instead of run.
    deadline_ms: int | None = Field(default=None, ge=0)
    # Topic the result goes to; `sg.results` when absent.
    reply_to: str | None = Field(default=None, min_length=1, max_length=249)
    tenant: str = Field(default="default", min_length=1, max_length=64)
    # Unix epoch ms when the client created the request (for end-to-end latency).
    created_ms: int | None = Field(default=None, ge=0)


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    EXPIRED = "expired"
    REJECTED = "rejected"


class ErrorInfo(_Record):
    code: str
    message: str
    # For `rejected` over quota: seconds after which the same request would be admitted.
    retry_after_s: float | None = None


class Timings(_Record):
    # Milliseconds from the worker reading the record to its batch starting.
    queue_ms: float = 0.0
    # Milliseconds the backend spent on the whole batch.
    compute_ms: float = 0.0
    # Requests in the batch this request ran in (0 when it never ran).
    batch_size: int = 0
    # Milliseconds from `created_ms` to the result being produced, when known.
    total_ms: float | None = None


class InferenceResult(_Record):
    """Exactly one per request. `outputs` is empty unless `status` is ok."""

    request_id: str
    status: Status
    model: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    timings: Timings = Field(default_factory=Timings)
    model_version: str = ""
    # Numeric precision of the variant that ran (fp32, fp16, bf16, int8; "" when none ran).
    precision: str = ""
    # What ran it: cpu, cuda or rocm ("" when nothing ran).
    device_kind: str = ""
    pool: str = ""
    worker: str = ""
    # Unix epoch ms when the result was produced.
    produced_ms: int = 0
    # Answered from the router's result cache (a copy of an identical request's result).
    cached: bool = False

    @model_validator(mode="after")
    def _error_iff_not_ok(self) -> Self:
        if (self.status is Status.OK) == (self.error is not None):
            raise ValueError("a result carries `error` exactly when its status is not ok")
        return self


class TelemetryEvent(_Record):
    """One per batch (`kind="batch"`); one per request (`kind="request"`) that ran in none.

    A batch event carries its members' per-request figures as parallel arrays
    (`request_ids`, `statuses`, `member_queue_ms`, `member_tokens`,
    `member_pixels`, in batch order): one record per batch instead of one per
    request. `members()` gives them back as the `kind="request"` events they
    stand for. Requests answered without running (expired, rejected,
    cancelled, unservable) still get a request event of their own.
    """

    kind: Literal["batch", "request"]
    model: str
    pool: str
    worker: str
    ts_ms: int
    model_version: str = ""
    precision: str = ""
    device_kind: str = ""
    status: Status | None = None
    request_id: str | None = None
    batch_size: int = 0
    # Summed real cost of the members, in tokens and pixels.
    tokens: int = 0
    pixels: int = 0
    # len(batch) * max(member cost), in the model's cost unit.
    padded_cost: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    # kind="batch" only: one entry per member request, in batch order.
    request_ids: list[str] | None = None
    statuses: list[Status] | None = None
    member_queue_ms: list[float] | None = None
    member_tokens: list[int] | None = None
    member_pixels: list[int] | None = None

    @model_validator(mode="after")
    def _members_line_up(self) -> Self:
        arrays = (
            self.request_ids,
            self.statuses,
            self.member_queue_ms,
            self.member_tokens,
            self.member_pixels,
        )
        if any(a is not None for a in arrays):
            if self.kind != "batch":
                raise ValueError("only a batch event carries member arrays")
            if len({-1 if a is None else len(a) for a in arrays}) != 1:
                raise ValueError("the member arrays must all be present and of one length")
        return self

    def members(self) -> list[TelemetryEvent]:
        """The per-request events a batch event's arrays stand for (none for other events)."""
        if self.request_ids is None:
            return []
        assert self.statuses is not None and self.member_queue_ms is not None
        assert self.member_tokens is not None and self.member_pixels is not None
        return [
            TelemetryEvent.model_construct(
                kind="request",
                model=self.model,
                pool=self.pool,
                worker=self.worker,
                ts_ms=self.ts_ms,
                model_version=self.model_version,
                precision=self.precision,
                device_kind=self.device_kind,
                batch_size=self.batch_size,
                compute_ms=self.compute_ms,
                request_id=rid,
                status=status,
                queue_ms=queue_ms,
                tokens=tokens,
                pixels=pixels,
            )
            for rid, status, queue_ms, tokens, pixels in zip(
                self.request_ids,
                self.statuses,
                self.member_queue_ms,
                self.member_tokens,
                self.member_pixels,
                strict=True,
            )
        ]
