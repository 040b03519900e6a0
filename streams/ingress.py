"""What the router does to one record before deciding where it goes.

After the shared codec has decoded and validated a record, `prepare()` masks
PII, checks the inputs against the model and prices the request (tokens with the
model's tokenizer, pixels from image headers). It is synchronous (it
tokenizes and reads image headers) and runs in the router's executor. It
raises `WireError`s with stable codes; nothing here logs payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits
from sluicegate.schemas.cost import Cost, TokenCounter, measure
from sluicegate.schemas.errors import InvalidImageError, OverLimitError, WireError
from sluicegate.schemas.imaging import image_size
from sluicegate.schemas.models import (
    ImageInput,
    InferenceRequest,
)

from .pii import PiiMasker


@dataclass(frozen=True, kw_only=True)
class Prepared:
    request: InferenceRequest  # PII already masked
    cost: Cost
    # PII values replaced, by kind (counts only).
    pii: dict[str, int]
    # Input statistics for drift detection: text_tokens, text_chars, image_pixels, image_aspect.
    features: dict[str, float]


def image_bytes(image: ImageInput, *, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """Encoded bytes of an inline image, or of a `file://` one for pricing.

    The worker re-reads the file and checks its sha256 before running it; the
    router only needs its header, but reads the file whole to keep one path.
    """
    if image.data is not None:
        return image.data
    path = Path(unquote(urlparse(image.uri or "").path))
    try:
        if path.stat().st_size > limits.max_image_bytes:
            raise OverLimitError(f"image file is over the {limits.max_image_bytes}-byte limit")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(
            f"cannot read image {image.uri!r} ({exc.strerror}); the router and the worker "
            "must be able to read the path"
        ) from None


def prepare(
    request: InferenceRequest,
    *,
    masker: PiiMasker,
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
) -> Prepared:
    """Mask, check against the model and price a decoded request.

    Raises `Refused` (carrying the masked request) for a request the model
    cannot take, so even a refusal forwards no unmasked text.
    """
    masked = masker.mask(request)
    try:
        spec = lookup(request.model)
        spec.check_inputs(masked.request)
        images = [image_bytes(image, limits=limits) for image in request.images]
        # Priced on the masked text: that is what the model will run on.
        cost = measure(
            spec, texts=masked.request.texts, images=images, counter=counter, limits=limits
        )
        features = _features(masked.request, cost, images)
    except WireError as exc:
        raise Refused(exc, masked.request) from None
    return Prepared(request=masked.request, cost=cost, pii=masked.found, features=features)


def _features(request: InferenceRequest, cost: Cost, images: list[bytes]) -> dict[str, float]:
    features: dict[str, float] = {}
    if request.texts:
        features["text_tokens"] = float(cost.tokens)
        features["text_chars"] = float(sum(len(t) for t in request.texts))
    for data in images[:1]:  # the first image stands for the request
        width, height = image_size(data)
        features["image_pixels"] = float(width * height)
        features["image_aspect"] = round(width / max(1, height), 4)
    return features


class Refused(Exception):
    """A decoded request the router will not forward, with its PII already masked."""

    def __init__(self, error: WireError, request: InferenceRequest) -> None:
        super().__init__(str(error))
        self.error = error
        self.request = request
