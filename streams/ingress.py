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
from sluicegate.schemas.catalog import ModelSpec, lookup
from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits
from sluicegate.schemas.cost import Cost, TokenCounter, image_pixels
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
    # The record's own bytes when they carry `request` unchanged (nothing was masked):
    # forwarded as they are instead of encoding the request again. None: encode it.
    value: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class Screened:
    """A request masked and checked against its model, waiting for its token count."""

    request: InferenceRequest  # PII already masked
    spec: ModelSpec
    images: list[bytes]  # image headers (remote) or bytes (inline), in order
    pii: dict[str, int]
    value: bytes | None = None  # as `Prepared.value`


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
    screened = screen(request, masker=masker, limits=limits, sources=sources)
    return price(screened, counter.count(screened.request.texts), limits=limits)


def screen(
    request: InferenceRequest,
    *,
    masker: PiiMasker,
    limits: WireLimits = DEFAULT_LIMITS,
    sources: ImageSources | None = None,
    value: bytes | None = None,
) -> Screened:
    """`prepare()` up to the token count: mask, check the inputs, read image headers.

    `value`: the record's bytes, kept as `Screened.value` if masking changed nothing.
    Raises `Refused` as `prepare()` does.
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
    except WireError as exc:
        raise Refused(exc, masked.request) from None
    unchanged = masked.request is request
    return Screened(
        request=masked.request,
        spec=spec,
        images=images,
        pii=masked.found,
        value=value if unchanged else None,
    )


def price(
    screened: Screened, tokens: list[int], *, limits: WireLimits = DEFAULT_LIMITS
) -> Prepared:
    """Price a screened request, given the token count of each of its (masked) texts.

    Priced on the masked text: that is what the model will run on (the counts
    come from `TokenCounter.count`, one call for a whole poll's texts). Raises
    `Refused` for an image whose header is unreadable or declares too many pixels.
    """
    request = screened.request
    try:
        pixels = sum(image_pixels(data, limits=limits) for data in screened.images)
        total = sum(tokens)
        cost = Cost(
            tokens=total, pixels=pixels, units=screened.spec.cost(tokens=total, pixels=pixels)
        )
        features = _features(request, cost, screened.images)
    except WireError as exc:
        raise Refused(exc, request) from None
    return Prepared(
        request=request, cost=cost, pii=screened.pii, features=features, value=screened.value
    )


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
