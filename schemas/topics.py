"""Topic names: the defaults the project and its users rely on."""

from __future__ import annotations

from typing import Literal, get_args

Pool = Literal["a100", "mi200", "cpu"]
POOLS: tuple[Pool, ...] = get_args(Pool)

REQUESTS = "sg.requests"
RESULTS = "sg.results"
TELEMETRY = "sg.telemetry"
DLQ = "sg.dlq"
WORK_PREFIX = "sg.work"
# Compacted: route specs keyed `route/<model>`, cancels keyed `cancel/<request_id>`.
CONTROL = "sg.control"
# Results of shadow traffic: never read by clients, diffed against the primary.
SHADOW_RESULTS = "sg.shadow.results"
TELEMETRY_ROLLUP = "sg.telemetry.rollup"
# Compacted: how often each in-flight input record was being run when a worker died.
ATTEMPTS = "sg.attempts"
# Compacted: the routers' cache entries `cache/<key>` and drift baselines
# `drift/<model>/<statistic>`, so a restarted router keeps them.
ROUTER_STATE = "sg.router.state"


def work_topic(model: str, pool: Pool | str, *, prefix: str = WORK_PREFIX) -> str:
    """`sg.work.<model>.<pool>`: where a pool's workers read a model's requests."""
    return f"{prefix}.{model}.{pool}"
