"""msgpack wire codec with a schema-version header and hard limits.

A record is a msgpack map of the model's fields; bytes travel as msgpack
`bin`. Headers: `sg-schema` (the version, ASCII digits) and `content-type:
application/x-msgpack`. A record without `sg-schema` is read as the current
version so hand-rolled producers (kcat) need not set it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from .errors import (
    DecodeError,
    OverLimitError,
    SchemaValidationError,
    UnsupportedSchemaError,
)
from .models import SCHEMA_VERSION, InferenceRequest, InferenceResult, TelemetryEvent

CONTENT_TYPE = "application/x-msgpack"
Headers = list[tuple[str, bytes]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class WireLimits:
    """Hard limits checked before any model work; over them is `over_limit`."""

    max_message_bytes: int = 8 * 1024 * 1024
    # Inline image bytes (they travel inside the Kafka record).
    max_image_bytes: int = 6 * 1024 * 1024
    # An image fetched by reference (file://, s3://, https://): the object's size.
    # The pixel limit below applies to every image, whatever its source.
    max_ref_image_bytes: int = 64 * 1024 * 1024
    # Pixels read from an image header; more is treated as a decompression bomb.
    max_image_pixels: int = 40_000_000
    max_text_chars: int = 20_000
    max_images: int = 8
    max_texts: int = 16
    # `file://` images must resolve inside this directory; None allows any path
    # the worker can read (set it in production: docs/security.md).
    image_root: str | None = None


DEFAULT_LIMITS = WireLimits()


def headers(extra: Sequence[tuple[str, bytes]] = ()) -> Headers:
    """Headers every sluicegate record carries, followed by `extra`."""
    base = [("sg-schema", str(SCHEMA_VERSION).encode()), ("content-type", CONTENT_TYPE.encode())]
    return base + list(extra)


def header(hdrs: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    """The last value of header `name`, or None."""
    found = None
    for key, value in hdrs or ():
        if key == name:
            found = value
    return found


def encode(record: BaseModel) -> bytes:
    packed: bytes = msgpack.packb(
        record.model_dump(mode="python", exclude_none=True), use_bin_type=True
    )
    return packed


def _unpack(value: bytes | None, hdrs: Sequence[tuple[str, bytes]] | None) -> dict[str, Any]:
    version = header(hdrs, "sg-schema")
    if version is not None and version != str(SCHEMA_VERSION).encode():
        raise UnsupportedSchemaError(
            f"sg-schema {version.decode(errors='replace')!r} is not supported; this worker reads "
            f"version {SCHEMA_VERSION}. Upgrade the worker or produce version {SCHEMA_VERSION}."
        )
    if not value:
        raise DecodeError("empty record value; produce a msgpack map (see docs/wire-format.md)")
    try:
        # Limits from the message size: a header declaring a 4 GB string in a
        # 100-byte message fails at once instead of allocating.
        size = len(value)
        obj = msgpack.unpackb(
            value,
            raw=False,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(
            f"value is not valid msgpack ({type(exc).__name__}); "
            "produce a msgpack map (see docs/wire-format.md)"
        ) from None
    if not isinstance(obj, dict):
        raise DecodeError(f"value is msgpack {type(obj).__name__}, expected a map of fields")
    return obj


def _validate(model: type[M], obj: dict[str, Any]) -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)[:5]
        )
        raise SchemaValidationError(
            f"invalid {model.__name__}: {problems} (run `sluicegate schema dump` for the schema)"
        ) from None


def decode_request(
    value: bytes | None,
    hdrs: Sequence[tuple[str, bytes]] | None = None,
    *,
    limits: WireLimits = DEFAULT_LIMITS,
) -> InferenceRequest:
    """Decode and validate one request. Raises a `WireError` subclass."""
    size = len(value or b"")
    if size > limits.max_message_bytes:
        raise OverLimitError(
            f"message is {size} bytes, over the {limits.max_message_bytes}-byte limit; "
            "send large images by `uri` (s3://, https:// or file://) + `sha256` instead of inline"
        )
    request = _validate(InferenceRequest, _unpack(value, hdrs))
    check_limits(request, limits)
    return request


def check_limits(request: InferenceRequest, limits: WireLimits = DEFAULT_LIMITS) -> None:
    if len(request.images) > limits.max_images:
        raise OverLimitError(f"{len(request.images)} images, the limit is {limits.max_images}")
    if len(request.texts) > limits.max_texts:
        raise OverLimitError(f"{len(request.texts)} texts, the limit is {limits.max_texts}")
    for i, text in enumerate(request.texts):
        if len(text) > limits.max_text_chars:
            raise OverLimitError(
                f"texts[{i}] has {len(text)} characters, over the {limits.max_text_chars} limit; "
                "split the text into several requests"
            )
    for i, image in enumerate(request.images):
        if image.data is not None and len(image.data) > limits.max_image_bytes:
            raise OverLimitError(
                f"images[{i}] is {len(image.data)} bytes, over the {limits.max_image_bytes}-byte "
                "limit; downscale it or send it by `uri`"
            )


def recover_request_id(value: bytes | None, key: bytes | None) -> str | None:
    """Best effort request_id from a record that failed to decode.

    Tries the `request_id` field of a msgpack map, then the record key (the
    SDK keys records by request_id). Never raises.
    """
    try:
        obj = msgpack.unpackb(value or b"", raw=False)
        rid = obj.get("request_id") if isinstance(obj, dict) else None
        if isinstance(rid, str) and 0 < len(rid) <= 128:
            return rid
    except Exception:
        pass
    if key:
        try:
            rid = key.decode()
        except UnicodeDecodeError:
            return None
        if 0 < len(rid) <= 128:
            return rid
    return None


def decode_result(
    value: bytes | None, hdrs: Sequence[tuple[str, bytes]] | None = None
) -> InferenceResult:
    return _validate(InferenceResult, _unpack(value, hdrs))


def decode_telemetry(
    value: bytes | None, hdrs: Sequence[tuple[str, bytes]] | None = None
) -> TelemetryEvent:
    return _validate(TelemetryEvent, _unpack(value, hdrs))
