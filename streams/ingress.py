"""What the router does to one record before deciding where it goes.

After the shared codec has decoded and validated a record, `prepare()` masks
PII, checks the inputs against the model and prices the request (tokens with the
model's tokenizer, pixels from image headers). It is synchronous (it
tokenizes and reads image headers) and runs in the router's executor. It
raises `WireError`s with stable codes; nothing here logs payloads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.images import peek_image
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits
from sluicegate.schemas.cost import Cost, TokenCounter, measure
from sluicegate.schemas.errors import WireError
from sluicegate.schemas.imaging import image_size
from sluicegate.schemas.models import (
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


def prepare(
    request: InferenceRequest,
    *,
    masker: PiiMasker,
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
    sources: ImageSources | None = None,
) -> Prepared:
    """Mask, check against the model and price a decoded request.

    Raises `Refused` (carrying the masked request) for a request the model
    cannot take, so even a refusal forwards no unmasked text.
    """
    masked = masker.mask(request)
    try:
        spec = lookup(request.model)
        spec.check_inputs(masked.request)
        # Headers only for remote images (a ranged read); the worker reads them whole.
        images = [
            peek_image(image, limits=limits, tenant=request.tenant, sources=sources)
            for image in request.images
        ]
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
