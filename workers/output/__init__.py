"""The output side of a worker: replies published through a `Delivery`.

- `publisher`: `Reply` (one input record's result, DLQ record, trace) and the
  `Publisher` that turns replies into messages, one `publish` per batch.
- `delivery`: the `Delivery` protocol, `Outgoing` messages and `AtLeastOnce`.
- `transactions`: `ExactlyOnce` (one transactional producer per partition).
- `offsets`: `OffsetTracker`, which input offsets may be committed.
"""

from ..config import WorkerSettings
from .delivery import AtLeastOnce, Delivery, Outgoing
from .offsets import OffsetTracker
from .publisher import Publisher, Reply
from .transactions import ExactlyOnce

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
        )
    return AtLeastOnce(kafka=settings.kafka)
