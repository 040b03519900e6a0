"""The routing decision, shared by the ingress router and the client SDK.

Until the router runs, producers may call `route()` themselves and write
straight to the work topic it names; the router makes the same decision for
records on `sg.requests`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import Pool


def route(
    request: InferenceRequest,
    *,
    topics: TopicSettings | None = None,
    pools: Sequence[Pool] = ("cpu",),
) -> str:
    """The work topic for `request`: its model's topic on the first pool offered.

    Raises `UnknownModelError` for a model not in the catalog. Pool choice by
    health, capacity and size comes with the router; today the caller's
    first pool wins.
    """
    spec = lookup(request.model)
    if not pools:
        raise ValueError("route() needs at least one pool")
    return (topics or TopicSettings()).work(spec.name, pools[0])
