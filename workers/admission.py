"""Turning a Kafka record into a request the batcher can take, or a refusal.

Runs in a worker thread (it reads files, parses image headers and tokenizes);
everything here is synchronous and raises `WireError`s with stable codes.
Images are read by `runtime.images.load_image`, the loader the router uses.

`admit_all` admits a whole poll: each record is checked on its own (`stage`:
decode, validate, read images, count pixels: every refusal is raised there),
then the texts of all the staged records are tokenized in one batch call, the
hot path's largest cost when done per record. Token counting never refuses,
so a record gets the same outcome alone (`admit`) as in a poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sluicegate.runtime.destinations import check_reply_to
from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.images import load_image
from sluicegate.schemas.catalog import ModelSpec, lookup
from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits, decode_request
from sluicegate.schemas.cost import Cost, TokenCounter, images_pixels, priced
from sluicegate.schemas.errors import InvalidInputError, WireError
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings

from .backends.base import ModelInputs


@dataclass(frozen=True, kw_only=True)
class Admitted:
    request: InferenceRequest
    inputs: ModelInputs
    cost: Cost


@dataclass(frozen=True, kw_only=True)
class Staged:
    """A record that passed every check; only its tokens are left to count."""

    request: InferenceRequest
    spec: ModelSpec
    images: tuple[bytes, ...]
    pixels: int

    def admitted(self, tokens: int) -> Admitted:
        cost = priced(self.spec, tokens=tokens, pixels=self.pixels)
        inputs = ModelInputs(texts=tuple(self.request.texts), images=self.images)
        return Admitted(request=self.request, inputs=inputs, cost=cost)


def stage(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    serving: ModelSpec,
    limits: WireLimits = DEFAULT_LIMITS,
    topics: TopicSettings | None = None,
    sources: ImageSources | None = None,
) -> Staged:
    """Decode, validate and read the images of one record; raises its `WireError`.

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
    pixels = images_pixels(images, limits=limits)
    return Staged(request=request, spec=spec, images=images, pixels=pixels)


def admit_all(
    records: Sequence[tuple[bytes | None, Sequence[tuple[str, bytes]]]],
    *,
    serving: ModelSpec,
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
    topics: TopicSettings | None = None,
    sources: ImageSources | None = None,
) -> list[Admitted | WireError]:
    """One outcome per (value, headers), in order; every text tokenized in one batch call."""
    staged: list[Staged | WireError] = []
    for value, headers in records:
        try:
            staged.append(
                stage(
                    value, headers, serving=serving, limits=limits, topics=topics, sources=sources
                )
            )
        except WireError as exc:
            staged.append(exc)
    counts = iter(
        counter.count([t for s in staged if isinstance(s, Staged) for t in s.request.texts])
    )
    return [
        s if isinstance(s, WireError) else s.admitted(sum(next(counts) for _ in s.request.texts))
        for s in staged
    ]


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
    staged = stage(value, headers, serving=serving, limits=limits, topics=topics, sources=sources)
    return staged.admitted(sum(counter.count(staged.request.texts)))
