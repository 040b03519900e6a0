"""Which work topics have a live consumer: pure bookkeeping over consumer-group descriptions.

The router's pool watch (`failover.py`) describes every consumer group about
once a second and hands the descriptions to `consumers_by_topic()`; the
answer (work topic -> groups whose members hold its partitions) goes to
`PoolLiveness.observe()`, and `PoolLiveness.state()` tells the routing policy
whether a model x pool has a consumer. A SIGKILLed worker stays a member
until its session times out (the worker's `session_timeout_ms`, 6 s by
default), so a dead pool is seen within that plus one watch interval.

Members whose client id starts with `RESCUE_CLIENT_PREFIX` are the router's
own rescuers (they drain a dead pool into a live one) and never count as a
live consumer of the pool they drain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

RESCUE_CLIENT_PREFIX = "sg-rescue"

Liveness = Literal["live", "dead", "unknown"]


@dataclass(frozen=True, kw_only=True)
class TopicConsumers:
    groups: frozenset[str]  # groups with a member (not a rescuer) holding a partition
    members: int  # such members, over all those groups


def consumers_by_topic(groups: Iterable[Mapping[str, Any]]) -> dict[str, TopicConsumers]:
    """Topic -> the groups consuming it, from `DescribeGroupsResponse.to_object()["groups"]`.

    A member counts for a topic when its current assignment holds one of the
    topic's partitions; members mid-rebalance (empty assignment) count for
    nothing until the next description.
    """
    found: dict[str, tuple[set[str], int]] = {}
    for group in groups:
        if group.get("error_code", 0) or group.get("protocol_type") != "consumer":
            continue
        for member in group.get("members", ()):
            if str(member.get("client_id", "")).startswith(RESCUE_CLIENT_PREFIX):
                continue
            raw = member.get("member_assignment") or b""
            if not raw:
                continue
            try:
                assignment = ConsumerProtocolMemberAssignment.decode(raw)
            except Exception:  # a foreign client's assignment format: not ours to read
                continue
            for topic, partitions in assignment.assignment:
                if partitions:
                    names, count = found.setdefault(topic, (set(), 0))
                    names.add(str(group["group"]))
                    found[topic] = (names, count + 1)
    return {t: TopicConsumers(groups=frozenset(g), members=n) for t, (g, n) in found.items()}


class PoolLiveness:
    """The latest consumer census of each work topic, with the time it was taken.

    `state()` is `unknown` before the first census or when the last one is
    older than `ttl_s` (the watch itself failing says nothing about the
    pools). `last_group()` remembers the group that last consumed a topic, so
    a rescuer can join it after its members are gone. Not thread-safe.
    """

    def __init__(self, *, ttl_s: float = 30.0) -> None:
        self._ttl_ms = ttl_s * 1000
        self._at_ms = -1
        self._live: dict[str, TopicConsumers] = {}
        self._last_group: dict[str, str] = {}

    def observe(self, census: Mapping[str, TopicConsumers], *, now_ms: int) -> None:
        self._at_ms = now_ms
        self._live = dict(census)
        for topic, consumers in census.items():
            self._last_group[topic] = min(consumers.groups)

    def state(self, topic: str, *, now_ms: int) -> Liveness:
        if self._at_ms < 0 or now_ms - self._at_ms > self._ttl_ms:
            return "unknown"
        return "live" if topic in self._live else "dead"

    def last_group(self, topic: str) -> str | None:
        return self._last_group.get(topic)
