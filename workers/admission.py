"""Turning a Kafka record into a request the batcher can take, or a refusal.

Runs in a worker thread (it reads files, parses image headers and tokenizes);
everything here is synchronous and raises `WireError`s with stable codes.
Images are read by `runtime.images.load_image`, the loader the router uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluicegate.runtime.destinations import check_reply_to
from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.images import load_image
from sluicegate.schemas.catalog import ModelSpec, lookup
from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits, decode_request
from sluicegate.schemas.cost import Cost, TokenCounter, measure
from sluicegate.schemas.errors import (
    InvalidInputError,
)
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings

from .backends.base import ModelInputs


@dataclass(frozen=True, kw_only=True)
class Admitted:
    request: InferenceRequest
    inputs: ModelInputs
    cost: Cost


def admit(
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    *,
    serving: ModelSpec,
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
    topics: TopicSettings | None = None,
    sources: ImageSources | None = None,
) -> Admitted:
    """Decode, validate and cost one record for the model this worker serves.

    With `topics`, `reply_to` is checked too (`runtime.destinations.check_reply_to`).
    """
    request = decode_request(value, headers, limits=limits)
    if topics is not None:
        check_reply_to(request.reply_to, topics)
    spec = lookup(request.model)
    if spec.name != serving.name:
        raise InvalidInputError(
            f"request for model {spec.name!r} arrived on the work topic of {serving.name!r}; "
            "produce to sg.requests or to the model's own work topic"
        )
    spec.check_inputs(request)
    images = tuple(
        load_image(image, limits=limits, tenant=request.tenant, sources=sources)
        for image in request.images
    )
    cost = measure(spec, texts=request.texts, images=images, counter=counter, limits=limits)
    return Admitted(
        request=request, inputs=ModelInputs(texts=tuple(request.texts), images=images), cost=cost
    )
