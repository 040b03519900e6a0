"""sluicegate: event-driven streaming inference over Kafka, budget-batched into Triton.

The packages are kept in the design card's top-level folders (`schemas/`,
`streams/`, `workers/`, `ops/`) and appear here as `sluicegate.<folder>`.

The client SDK, re-exported here (imported on first use, so `python -m
sluicegate` does not pay for it):

- `Client`: synchronous, for code without asyncio (`with sluicegate.Client() as c:`);
- `AsyncClient`: the asyncio client (`async with sluicegate.AsyncClient() as c:`);
- `ClientSettings`, `ResultTimeout`, `InferenceRequest`, `ImageInput`, `InferenceResult`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluicegate.schemas.models import ImageInput, InferenceRequest, InferenceResult
    from sluicegate.streams.client import Client as AsyncClient
    from sluicegate.streams.client import ClientSettings, ResultTimeout
    from sluicegate.streams.sync_client import Client

__version__ = "0.1.0"

_EXPORTS = {
    "Client": ("sluicegate.streams.sync_client", "Client"),
    "AsyncClient": ("sluicegate.streams.client", "Client"),
    "ClientSettings": ("sluicegate.streams.client", "ClientSettings"),
    "ResultTimeout": ("sluicegate.streams.client", "ResultTimeout"),
    "InferenceRequest": ("sluicegate.schemas.models", "InferenceRequest"),
    "InferenceResult": ("sluicegate.schemas.models", "InferenceResult"),
    "ImageInput": ("sluicegate.schemas.models", "ImageInput"),
}
__all__ = [
    "AsyncClient",
    "Client",
    "ClientSettings",
    "ImageInput",
    "InferenceRequest",
    "InferenceResult",
    "ResultTimeout",
    "__version__",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'sluicegate' has no attribute {name!r}") from None
    return getattr(import_module(module), attr)
