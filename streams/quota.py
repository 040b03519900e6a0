"""Per-tenant admission in cost units: one token bucket per tenant.

A request costs its tokens plus its pixels divided by `pixels_per_unit`, so
text and image traffic draw on one budget. A bucket holds up to `burst`
units and refills at `rate` units per second; a request that does not fit is
refused with the seconds after which it would (`retry_after_s`), never
queued: the router must not hold records while a tenant waits.

Several routers in one group split the quota: each holds the share of every
bucket (rate and burst) that its assigned partitions of the request topic
are of all of them (`set_share`, called on each rebalance). The client keys
requests by request id, so a tenant's traffic spreads evenly over the
partitions and the shares add up to the configured quota (docs/scaling.md).

Written by hand (about 40 lines) rather than with aiolimiter: aiolimiter's
`acquire` waits for capacity and `has_capacity` says nothing about when,
while the router needs a non-blocking yes/no with a retry-after, and a
clock it can inject in unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.schemas.cost import Cost


class TenantQuota(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Cost units per second a tenant may send, sustained.
    rate: float = Field(default=200_000.0, gt=0)
    # Cost units a tenant may send at once after being idle.
    burst: float = Field(default=1_000_000.0, gt=0)


class QuotaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    default: TenantQuota = TenantQuota()
    tenants: dict[str, TenantQuota] = Field(default_factory=dict)
    # One cost unit per token, and per this many pixels.
    pixels_per_unit: int = Field(default=256, ge=1)


def units(cost: Cost, pixels_per_unit: int) -> float:
    """The quota price of a request: tokens + pixels / pixels_per_unit."""
    return cost.tokens + cost.pixels / pixels_per_unit


@dataclass(frozen=True)
class Refusal:
    tenant: str
    units: float
    # Seconds after which the same request would be admitted (inf: never, over the burst).
    retry_after_s: float


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class TenantQuotas:
    """Token buckets by tenant. Not thread-safe: the router calls it from its loop."""

    def __init__(
        self, *, settings: QuotaSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings or QuotaSettings()
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.share = 1.0

    def set_share(self, share: float) -> None:
        """This router's part of every tenant's quota, in (0, 1]; buckets keep their level."""
        self.share = min(1.0, max(share, 1e-6))

    def quota(self, tenant: str) -> TenantQuota:
        return self._settings.tenants.get(tenant, self._settings.default)

    def price(self, cost: Cost) -> float:
        return units(cost, self._settings.pixels_per_unit)

    def admit(self, tenant: str, cost: Cost) -> Refusal | None:
        """Take the request's units from the tenant's bucket, or say when to retry."""
        q = self.quota(tenant)
        rate, burst = q.rate * self.share, q.burst * self.share
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(burst, now)
        bucket.level = min(burst, bucket.level + (now - bucket.stamp) * rate)
        bucket.stamp = now
        need = self.price(cost)
        if need <= bucket.level:
            bucket.level -= need
            return None
        retry = float("inf") if need > burst else (need - bucket.level) / rate
        return Refusal(tenant=tenant, units=need, retry_after_s=retry)
