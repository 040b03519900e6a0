"""What each pool's backlog costs, for autoscaling: `sluicegate_backlog_cost{model,pool}`.

A window's `lag_cost` exists only once a pool ran a batch, so a pool scaled
to zero (or never started) would export nothing and could never be scaled
up on it. The rollups process therefore also measures, every
`backlog_interval_s`, the lag of every model x pool's work topic against its
worker group (`<prefix>.<model>.<pool>`; the whole topic when the group has
committed nothing) and prices it: records x the mean cost per request of the
pool's latest window, or, before any window, `ASSUMED_COST` of the model (a
typical request). KEDA scales each pool on this gauge (ops/k8s, a
`prometheus` trigger); `sluicegate_backlog_records` is the raw count.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sluicegate.runtime import kafka
from sluicegate.schemas.settings import TopicSettings

from .records import WindowRollup

log = logging.getLogger("sluicegate.telemetry.backlog")

# Cost of one request before a pool reported any window, in the model's unit:
# a short paragraph (tokens), a page-sized image (pixels).
ASSUMED_COST: dict[str, float] = {"text-embed": 64.0, "ocr": 1_000_000.0, "doc-match": 1_000_000.0}


class BacklogGauge(Collector):
    """Latest backlog per model x pool. Thread-safe (the loop sets, the HTTP thread collects)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], int] = {}
        self._mean_cost: dict[tuple[str, str], float] = {}

    def observe_window(self, rollup: WindowRollup) -> None:
        """Learn the pool's mean cost per request from a window that ran batches."""
        if rollup.batches and rollup.requests:
            with self._lock:
                members = max(1.0, rollup.mean_batch_size * rollup.batches)
                mean = rollup.cost_per_s * rollup.window_s / members
                self._mean_cost[(rollup.model, rollup.pool)] = mean

    def set(self, model: str, pool: str, records: int) -> None:
        with self._lock:
            self._records[(model, pool)] = records

    def cost(self, model: str, pool: str) -> float:
        """Records waiting x mean cost (assumed before any window); 0 before any measurement."""
        with self._lock:
            records = self._records.get((model, pool), 0)
            mean = self._mean_cost.get((model, pool), ASSUMED_COST.get(model, 1.0))
        return round(records * mean, 3)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            keys = sorted(self._records)
            counts = dict(self._records)
        cost = GaugeMetricFamily(
            "sluicegate_backlog_cost",
            "Requests waiting on the pool's work topic times their mean cost (tokens or pixels)",
            labels=["model", "pool"],
        )
        records = GaugeMetricFamily(
            "sluicegate_backlog_records",
            "Requests waiting on the pool's work topic",
            labels=["model", "pool"],
        )
        for model, pool in keys:
            cost.add_metric([model, pool], self.cost(model, pool))
            records.add_metric([model, pool], counts[(model, pool)])
        yield cost
        yield records


async def measure(
    gauge: BacklogGauge,
    *,
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    topics: TopicSettings,
    group_prefix: str,
    models: Sequence[str],
    pools: Sequence[str],
) -> None:
    """Set `gauge` for every model x pool whose work topic exists (best effort, logged)."""
    for model in models:
        for pool in pools:
            topic = topics.work(model, pool)
            try:
                parts = await kafka.partitions_of(admin, topic)
                if not parts:
                    continue
                committed = await admin.list_consumer_group_offsets(
                    f"{group_prefix}.{model}.{pool}"
                )
                ends = await consumer.end_offsets(parts)
                starts = await consumer.beginning_offsets(parts)
            except Exception as exc:  # the gauge keeps its last value; retried next interval
                log.debug("no backlog for %s: %r", topic, exc)
                continue
            gauge.set(model, pool, _lag(ends, starts, committed))


def _lag(
    ends: dict[TopicPartition, int],
    starts: dict[TopicPartition, int],
    committed: dict[TopicPartition, object],
) -> int:
    total = 0
    for tp, end in ends.items():
        done = committed.get(tp)
        offset = getattr(done, "offset", -1) if done is not None else -1
        total += max(0, end - (offset if offset >= 0 else starts.get(tp, 0)))
    return total
