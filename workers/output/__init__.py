"""The output side of a worker: replies published through a `Delivery`.

- `publisher`: `Reply` (one input record's result, DLQ record, trace) and the
  `Publisher` that turns replies into messages, one `publish` per batch.
- `delivery`: the `Delivery` protocol and `AtLeastOnce` (`Outgoing` messages are
  `runtime.transactions.Outgoing`).
- `transactions`: `ExactlyOnce` (one transactional producer per partition; it
  lives in `runtime.transactions`, shared with the router).
- `offsets`: `OffsetTracker`, which input offsets may be committed.
"""

from sluicegate.runtime.transactions import ExactlyOnce, Outgoing

from ..config import WorkerSettings
from .delivery import AtLeastOnce, Delivery
from .offsets import OffsetTracker
from .publisher import Publisher, Reply

__all__ = [
    "AtLeastOnce",
    "Delivery",
    "ExactlyOnce",
    "OffsetTracker",
    "Outgoing",
    "Publisher",
    "Reply",
    "default_delivery",
]


def default_delivery(settings: WorkerSettings) -> Delivery:
    """The delivery `settings.delivery` names, connected to `settings.kafka`."""
    if settings.delivery == "exactly_once":
        return ExactlyOnce(
            kafka=settings.kafka,
            group=settings.group(),
            transaction_timeout_ms=settings.transaction_timeout_ms,
            dlq_topic=settings.topics.dlq,
            results_topic=settings.topics.results,
            stage="deliver",
        )
    return AtLeastOnce(kafka=settings.kafka)
