"""Pool liveness: consumer-group census, its TTL, and what the routing policy makes of it."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from sluicegate.ops.stack.pools import parse_pools
from sluicegate.ops.stack.process import StackError
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.health import PoolHealth, PoolState
from sluicegate.streams.liveness import (
    RESCUE_CLIENT_PREFIX,
    PoolLiveness,
    consumers_by_topic,
)
from sluicegate.streams.routing import RoutingSettings, choose_pool

TOPICS = TopicSettings()
A100 = TOPICS.work("text-embed", "a100")
CPU = TOPICS.work("text-embed", "cpu")


def member(client_id: str, *topics: str) -> dict[str, Any]:
    assignment = ConsumerProtocolMemberAssignment(0, [(t, [0, 1]) for t in topics], b"").encode()
    return {"member_id": f"{client_id}-1", "client_id": client_id, "member_assignment": assignment}


def group(name: str, *members: dict[str, Any], error_code: int = 0) -> dict[str, Any]:
    return {
        "error_code": error_code,
        "group": name,
        "protocol_type": "consumer",
        "members": list(members),
    }


def test_census_counts_assigned_members_and_ignores_rescuers_and_rebalancing() -> None:
    census = consumers_by_topic(
        [
            group("sg.worker.text-embed.cpu", member("w1", CPU), member("w2", CPU)),
            group(
                "sg.worker.text-embed.a100", member(f"{RESCUE_CLIENT_PREFIX}-text-embed-a100", A100)
            ),
            group("mid-rebalance", {"client_id": "w3", "member_assignment": b""}),
            group("broken", member("w4", "other"), error_code=16),
        ]
    )
    assert set(census) == {CPU}
    assert census[CPU].members == 2
    assert census[CPU].groups == frozenset({"sg.worker.text-embed.cpu"})


def test_liveness_dead_live_and_unknown_after_ttl() -> None:
    live = PoolLiveness(ttl_s=30)
    assert live.state(A100, now_ms=0) == "unknown"  # no census yet
    census = consumers_by_topic(
        [group("g-a100", member("w", A100)), group("g-cpu", member("c", CPU))]
    )
    live.observe(census, now_ms=1_000)
    assert live.state(A100, now_ms=1_500) == "live"
    live.observe(consumers_by_topic([group("g-cpu", member("c", CPU))]), now_ms=2_000)
    assert live.state(A100, now_ms=2_500) == "dead"
    assert live.last_group(A100) == "g-a100"  # a rescuer joins the group it last saw
    assert live.state(A100, now_ms=2_000 + 30_001) == "unknown"  # the watch went quiet


def states(**consumers: str) -> dict[str, PoolState]:
    return {p: PoolState(health="unknown", consumers=c) for p, c in consumers.items()}  # type: ignore[arg-type]


def test_a_pool_without_consumers_is_not_chosen_while_another_has_one() -> None:
    s = RoutingSettings(pools=("a100", "cpu"))
    large = Cost(tokens=120, pixels=0, units=120)
    pick = {
        choose_pool(
            "text-embed",
            key=str(k),
            cost=large,
            candidates=["a100", "cpu"],
            states=states(a100="dead", cpu="live"),
            settings=s,
        )
        for k in range(50)
    }
    assert pick == {"cpu"}
    back = choose_pool(
        "text-embed",
        key="k",
        cost=large,
        candidates=["a100", "cpu"],
        states=states(a100="live", cpu="live"),
        settings=s,
    )
    assert back == "a100"
    # No pool consumed at all: liveness says nothing useful, the rollups decide.
    none = choose_pool(
        "text-embed",
        key="k",
        cost=large,
        candidates=["a100", "cpu"],
        states=states(a100="dead", cpu="dead"),
        settings=s,
    )
    assert none == "a100"


def test_pool_health_reports_consumers_from_liveness() -> None:
    live = PoolLiveness()
    health = PoolHealth(liveness=live, work_topic=TOPICS.work)
    assert health.state("text-embed", "a100", now_ms=0).consumers == "unknown"
    live.observe(consumers_by_topic([group("g", member("c", CPU))]), now_ms=100)
    assert health.state("text-embed", "a100", now_ms=200).consumers == "dead"
    assert health.state("text-embed", "cpu", now_ms=200).consumers == "live"


def test_up_pools_parse_and_refuse_what_cannot_run_here() -> None:
    assert parse_pools(["a100"]) == ("cpu", "a100")
    assert parse_pools(["cpu,a100"]) == ("cpu", "a100")
    with pytest.raises(StackError, match="mi200 needs its own hardware"):
        parse_pools(["cpu,mi200"])
    with pytest.raises(StackError, match="pools are"):
        parse_pools(["tpu"])


def test_backlog_cost_is_defined_before_any_window_and_priced_by_the_pools_mean_after() -> None:
    from aiokafka import TopicPartition

    from sluicegate.streams.backlog import ASSUMED_COST, BacklogGauge, _lag
    from sluicegate.streams.records import WindowRollup

    tp0, tp1 = TopicPartition(A100, 0), TopicPartition(A100, 1)

    class Committed:
        offset = 7

    # Nothing committed on tp1 (no worker ever ran): the whole retained topic counts.
    assert _lag({tp0: 10, tp1: 5}, {tp0: 0, tp1: 2}, {tp0: Committed()}) == 3 + 3
    gauge = BacklogGauge()
    gauge.set("text-embed", "a100", 6)
    assert gauge.cost("text-embed", "a100") == 6 * ASSUMED_COST["text-embed"]
    window = WindowRollup(
        model="text-embed",
        pool="a100",
        version="1",
        window_s=10,
        start_ms=0,
        end_ms=10_000,
        requests=20,
        ok=20,
        batches=4,
        mean_batch_size=5.0,
        cost_per_s=40.0,  # 400 tokens over 20 requests: 20 each
    )
    gauge.observe_window(window)
    assert gauge.cost("text-embed", "a100") == 6 * 20.0
    samples = {(s.name, s.labels["pool"]): s.value for m in gauge.collect() for s in m.samples}
    assert samples[("sluicegate_backlog_cost", "a100")] == 120.0
    assert samples[("sluicegate_backlog_records", "a100")] == 6
