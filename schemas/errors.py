"""Errors of the wire contract.

Every error carries a stable machine `code` that ends up in an error result
or a DLQ header, and a message that names the fix.

    WireError                      code
    ├── DecodeError                msgpack_format   bytes are not a msgpack map
    ├── UnsupportedSchemaError     schema_version   sg-schema header we cannot read
    ├── SchemaValidationError      schema           fields missing / wrong type
    ├── OverLimitError             over_limit       message, image or text too large
    │   └── ImageBombError         image_bomb       too many pixels in an image header
    ├── InvalidImageError          invalid_image    image header unreadable, sha256 mismatch
    │   ├── UnsupportedImageError  unsupported_image_format  a format outside the allow-list
    │   ├── ImageOutsideRootError  image_outside_root        file:// path outside the allowed root
    │   └── ImageRefRefusedError   image_ref_refused         s3:// or https:// source not allowed
    ├── InvalidInputError          invalid_input    inputs do not fit the model
    ├── UnknownModelError          unknown_model    no such model in the catalog
    ├── InvalidReplyToError        invalid_reply_to reply_to not a legal topic, or internal
    └── QuarantinedError           poison           running each time a worker died

`ErrorCode` lists every code a result's `error.code` or a DLQ record's
`sg-dlq-code` header can carry: the wire errors above, the refusals the
router and the workers answer themselves (`cancelled`, `over_budget`,
`over_quota`, `deadline_expired`) and the backend failures of
`sluicegate.workers.errors`. Each has a default user-facing message
(`ErrorCode.X.message`) that names the fix where there is a standard one;
callers with a more precise message (the budget that was exceeded, the quota
refill time) send that instead. The values are the wire format: never
rename one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    WIRE_ERROR = "wire_error"
    MSGPACK_FORMAT = "msgpack_format"
    SCHEMA_VERSION = "schema_version"
    SCHEMA = "schema"
    OVER_LIMIT = "over_limit"
    IMAGE_BOMB = "image_bomb"
    INVALID_IMAGE = "invalid_image"
    UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"
    IMAGE_OUTSIDE_ROOT = "image_outside_root"
    IMAGE_REF_REFUSED = "image_ref_refused"
    INVALID_INPUT = "invalid_input"
    UNKNOWN_MODEL = "unknown_model"
    INVALID_REPLY_TO = "invalid_reply_to"
    # Where a result could not go, or what was refused without running.
    REPLY_TO_UNWRITABLE = "reply_to_unwritable"
    POISON = "poison"
    CONTROL_MALFORMED = "control_malformed"
    # Refusals answered by the router or a worker without running the request.
    CANCELLED = "cancelled"
    OVER_BUDGET = "over_budget"
    OVER_QUOTA = "over_quota"
    DEADLINE_EXPIRED = "deadline_expired"
    VERSION_UNAVAILABLE = "version_unavailable"
    PRECISION_UNAVAILABLE = "precision_unavailable"
    # Backend failures (sluicegate.workers.errors).
    WORKER_ERROR = "worker_error"
    BACKEND_ERROR = "backend_error"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    BACKEND_REJECTED = "backend_rejected"
    # The brokers' ACLs refused this principal an operation (a client-side error).
    NOT_AUTHORIZED = "not_authorized"
    # A dead letter whose exception carried no code.
    ERROR = "error"

    @property
    def message(self) -> str:
        """The default user-facing message; names the fix where there is a standard one."""
        return _MESSAGES[self]


_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.WIRE_ERROR: "the record could not be decoded; fix the producer",
    ErrorCode.MSGPACK_FORMAT: (
        "the record's value is not a msgpack map; encode requests with sluicegate.schemas.codec"
    ),
    ErrorCode.SCHEMA_VERSION: (
        "the record's sg-schema header names a version this process cannot read; "
        "upgrade the reader or produce the supported version"
    ),
    ErrorCode.SCHEMA: "fields are missing or have the wrong type; see docs for the request schema",
    ErrorCode.OVER_LIMIT: "the message, an image or a text is over its size limit; send less",
    ErrorCode.IMAGE_BOMB: "an image header declares too many pixels; downscale the image",
    ErrorCode.INVALID_IMAGE: (
        "an image could not be read or its sha256 does not match; send a valid PNG/JPEG "
        "with the right sha256"
    ),
    ErrorCode.UNSUPPORTED_IMAGE_FORMAT: "the image format is not allowed; send PNG or JPEG",
    ErrorCode.IMAGE_OUTSIDE_ROOT: (
        "a file:// image is outside the image root; put the file under it or send the image inline"
    ),
    ErrorCode.IMAGE_REF_REFUSED: (
        "an s3:// or https:// image names a bucket, host or address not allowed for the "
        "tenant; use an allowed source (SLUICEGATE_IMAGES__ALLOW) or send the image inline"
    ),
    ErrorCode.INVALID_INPUT: "the inputs do not fit the model; see the model's catalog entry",
    ErrorCode.UNKNOWN_MODEL: "no such model in the catalog; check the model name",
    ErrorCode.INVALID_REPLY_TO: (
        "reply_to must be a legal Kafka topic name ([a-zA-Z0-9._-], 1..249 characters) and "
        "not an internal sg.* topic; leave it empty for sg.results or use an allowed prefix "
        "(SLUICEGATE_TOPICS__REPLY_TO_PREFIXES)"
    ),
    ErrorCode.REPLY_TO_UNWRITABLE: (
        "the reply_to topic does not exist, may not be written or refused the record; the "
        "result went to sg.results instead: create the topic (and grant Write) or drop reply_to"
    ),
    ErrorCode.POISON: (
        "the record was being processed each time a worker died; it was quarantined without "
        "running: fix the input (see the DLQ record), then `sluicegate dlq replay`"
    ),
    ErrorCode.CONTROL_MALFORMED: (
        "a record on the control topic could not be read and was ignored; write control records "
        "with `sluicegate route` / `sluicegate cancel`"
    ),
    ErrorCode.CANCELLED: (
        "the request was cancelled (a cancel record on the control topic) before it ran"
    ),
    ErrorCode.OVER_BUDGET: (
        "the request costs more than the pool's batch budget; split it or raise "
        "SLUICEGATE_BATCH__BUDGET"
    ),
    ErrorCode.OVER_QUOTA: "the tenant's quota is used up; retry after retry_after_s",
    ErrorCode.DEADLINE_EXPIRED: (
        "the request's deadline_ms passed before it could run; give it a later deadline"
    ),
    ErrorCode.VERSION_UNAVAILABLE: (
        "the pool does not serve that model version; ask for one it serves (the "
        "worker logs them when it starts) or build the model repository with it"
    ),
    ErrorCode.PRECISION_UNAVAILABLE: (
        "the pool has no variant of that version at that precision; drop the "
        "`precision` pin or ask for one the version is built at"
    ),
    ErrorCode.WORKER_ERROR: "the worker failed; the request may be retried",
    ErrorCode.BACKEND_ERROR: "the inference backend failed on this request",
    ErrorCode.BACKEND_UNAVAILABLE: "the inference backend is unavailable; retry later",
    ErrorCode.DEADLINE_EXCEEDED: "the inference call timed out; retry later",
    ErrorCode.BACKEND_REJECTED: "the inference backend rejected this request's inputs",
    ErrorCode.NOT_AUTHORIZED: (
        "the Kafka ACLs do not allow this principal the operation; use the principal whose "
        "row in docs/security.md allows it, or add the ACL (`sluicegate topics acls --apply`)"
    ),
    ErrorCode.ERROR: "an unexpected error",
}


class WireError(ValueError):
    """Root of the errors raised while decoding or admitting a request."""

    code: ClassVar[str] = ErrorCode.WIRE_ERROR
    # Retrying the same bytes never helps: the producer must fix them.
    retriable: ClassVar[bool] = False


class DecodeError(WireError):
    code = ErrorCode.MSGPACK_FORMAT


class UnsupportedSchemaError(WireError):
    code = ErrorCode.SCHEMA_VERSION


class SchemaValidationError(WireError):
    code = ErrorCode.SCHEMA


class OverLimitError(WireError):
    code = ErrorCode.OVER_LIMIT


class ImageBombError(OverLimitError):
    code = ErrorCode.IMAGE_BOMB


class InvalidImageError(WireError):
    code = ErrorCode.INVALID_IMAGE


class UnsupportedImageError(InvalidImageError):
    code = ErrorCode.UNSUPPORTED_IMAGE_FORMAT


class ImageOutsideRootError(InvalidImageError):
    code = ErrorCode.IMAGE_OUTSIDE_ROOT


class ImageRefRefusedError(InvalidImageError):
    code = ErrorCode.IMAGE_REF_REFUSED


class InvalidInputError(WireError):
    code = ErrorCode.INVALID_INPUT


class UnknownModelError(WireError):
    code = ErrorCode.UNKNOWN_MODEL


class InvalidReplyToError(WireError):
    code = ErrorCode.INVALID_REPLY_TO


class QuarantinedError(WireError):
    """Refused at admission without running: crash-loop quarantine (`workers.quarantine`)."""

    code = ErrorCode.POISON
