"""Turning a Kafka record into a request the batcher can take, or a refusal.

Runs in a worker thread (it reads files, parses image headers and tokenizes);
everything here is synchronous and raises `WireError`s with stable codes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from sluicegate.schemas.catalog import ModelSpec, lookup
from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits, decode_request
from sluicegate.schemas.cost import Cost, TokenCounter, measure
from sluicegate.schemas.errors import (
    ImageOutsideRootError,
    InvalidImageError,
    InvalidInputError,
    OverLimitError,
)
from sluicegate.schemas.models import ImageInput, InferenceRequest

from .backends.base import ModelInputs


@dataclass(frozen=True, kw_only=True)
class Admitted:
    request: InferenceRequest
    inputs: ModelInputs
    cost: Cost


def load_image(image: ImageInput, *, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """The encoded bytes of an image, reading `file://` references (sha256-checked)."""
    if image.data is not None:
        return image.data
    assert image.uri is not None and image.sha256 is not None  # validated by the model
    parsed = urlparse(image.uri)
    if parsed.netloc not in ("", "localhost"):
        raise InvalidImageError(f"image uri {image.uri!r} names a remote host; use file:///path")
    path = Path(unquote(parsed.path))
    if limits.image_root is not None:
        root = Path(limits.image_root).resolve()
        if not path.resolve().is_relative_to(root):
            raise ImageOutsideRootError(
                f"image uri {image.uri!r} is outside the worker's image root {str(root)!r}; "
                "put the file under it or send the image inline"
            )
    try:
        size = path.stat().st_size
        if size > limits.max_image_bytes:
            raise OverLimitError(
                f"image file is {size} bytes, over the {limits.max_image_bytes}-byte limit"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(
            f"cannot read image {image.uri!r} ({exc.strerror}); the worker must be able to "
            "read the path"
        ) from None
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise InvalidImageError(f"sha256 of {image.uri!r} does not match the request's `sha256`")
    return data


def admit(
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    *,
    serving: ModelSpec,
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
) -> Admitted:
    """Decode, validate and cost one record for the model this worker serves."""
    request = decode_request(value, headers, limits=limits)
    spec = lookup(request.model)
    if spec.name != serving.name:
        raise InvalidInputError(
            f"request for model {spec.name!r} arrived on the work topic of {serving.name!r}; "
            "produce to sg.requests or to the model's own work topic"
        )
    spec.check_inputs(request)
    images = tuple(load_image(image, limits=limits) for image in request.images)
    cost = measure(spec, texts=request.texts, images=images, counter=counter, limits=limits)
    return Admitted(
        request=request, inputs=ModelInputs(texts=tuple(request.texts), images=images), cost=cost
    )
