"""Weighted, sticky choice of a model version, and which requests get a shadow copy.

A key (the record key, else the request id) hashes to a point in [0, 1);
versions own consecutive slices of that interval in proportion to their
weights, in version-name order. The same key therefore lands on the same
version for as long as the weights stay the same, and moving weight from one
version to another only moves the keys in the slice that changed hands.
"""

from __future__ import annotations

import hashlib

from sluicegate.schemas.control import RouteSpec


def unit_point(key: str, *, salt: str) -> float:
    """A stable, uniform point in [0, 1) for `key` (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_version(spec: RouteSpec, key: str) -> str:
    """The version `key` is served by under `spec`'s weights."""
    if len(spec.versions) == 1:  # the usual route: no canary, no hash to compute
        return next(iter(spec.versions))
    names = sorted(spec.versions)
    total = sum(spec.versions[n] for n in names)
    point = unit_point(key, salt=f"canary/{spec.model}") * total
    edge = 0.0
    for name in names:
        edge += spec.versions[name]
        if point < edge:
            return name
    return names[-1]  # float rounding at the very top of the interval


def shadow_version(spec: RouteSpec, key: str) -> str | None:
    """The shadow version that gets a copy of this request, if any."""
    if spec.shadow is None or spec.shadow_fraction <= 0:
        return None
    if unit_point(key, salt=f"shadow/{spec.model}") < spec.shadow_fraction:
        return spec.shadow
    return None
