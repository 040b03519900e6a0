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


def test_routers_splitting_the_partitions_admit_the_quota_once_between_them() -> None:
    """Two routers with shares 2/3 and 1/3 of the partitions, each seeing its share of
    the traffic, admit together what one router with the whole quota would."""
    clock = Clock()
    settings = QuotaSettings(tenants={"t": TenantQuota(rate=30, burst=60)})
    routers = [TenantQuotas(settings=settings, clock=clock) for _ in range(2)]
    routers[0].set_share(2 / 3)
    routers[1].set_share(1 / 3)
    admitted = 0
    for step in range(300):  # 30 s of 10 requests of 1 unit per 0.1 s, 3x the rate
        clock.t = step / 10
        for i in range(10):
            if routers[0 if i % 3 else 1].admit("t", cost(1)) is None:
                admitted += 1
    # burst 60 + 30/s x 29.9 s, give or take a unit per router
    assert abs(admitted - (60 + 30 * 29.9)) <= 2
    one = TenantQuotas(settings=settings, clock=clock)
    one.set_share(0.5)
    refusal = one.admit("t", cost(31))
    assert refusal is not None and refusal.retry_after_s == math.inf  # over this router's burst
