"""Per-tenant token buckets in cost units."""

from __future__ import annotations

import math

from sluicegate.schemas.cost import Cost
from sluicegate.streams.quota import QuotaSettings, TenantQuota, TenantQuotas


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def cost(tokens: int = 0, pixels: int = 0) -> Cost:
    return Cost(tokens=tokens, pixels=pixels, units=tokens + pixels)


def test_burst_then_refusal_with_retry_after_then_refill() -> None:
    clock = Clock()
    quotas = TenantQuotas(
        settings=QuotaSettings(tenants={"t": TenantQuota(rate=10, burst=100)}), clock=clock
    )
    assert quotas.admit("t", cost(60)) is None
    refusal = quotas.admit("t", cost(60))
    assert refusal is not None and math.isclose(refusal.retry_after_s, 2.0)
    clock.t = 1.9
    assert quotas.admit("t", cost(60)) is not None
    clock.t = 2.0
    assert quotas.admit("t", cost(60)) is None


def test_pixels_weigh_per_pixels_per_unit_and_tenants_are_separate() -> None:
    clock = Clock()
    settings = QuotaSettings(default=TenantQuota(rate=1, burst=1000), pixels_per_unit=1000)
    quotas = TenantQuotas(settings=settings, clock=clock)
    assert quotas.price(cost(10, 500_000)) == 510
    assert quotas.admit("a", cost(10, 500_000)) is None
    assert quotas.admit("a", cost(10, 500_000)) is not None
    assert quotas.admit("b", cost(10, 500_000)) is None


def test_a_request_larger_than_the_burst_never_fits() -> None:
    quotas = TenantQuotas(settings=QuotaSettings(default=TenantQuota(rate=5, burst=50)))
    refusal = quotas.admit("t", cost(51))
    assert refusal is not None and refusal.retry_after_s == math.inf
