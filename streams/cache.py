"""Result cache: identical requests within a TTL are answered from the first one's result.

Identity is a content hash of the model, the inputs (texts as masked, image
bytes or their sha256) and the parameters; the request id, tenant,
priority, deadline and reply topic do not count. Only `ok` results are kept.
The router fills the cache from the result topic, for requests it routed,
and answers a hit with a copy of the cached result under the new request's
id, marked `cached`. Bounded in entries (oldest evicted first) and in time.
Entries survive a restart through the router's state topic (`state.py`:
`take_new()` says what to write, `restore()` takes it back). Pure: the
clock is injected.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import msgpack

from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status


def content_key(request: InferenceRequest) -> str:
    """sha256 over model + inputs + parameters (stable across processes)."""
    images = [
        image.sha256 or hashlib.sha256(image.data or b"").hexdigest() for image in request.images
    ]
    body = msgpack.packb(
        [request.model, list(request.texts), images, sorted(request.parameters.items())],
        use_bin_type=True,
    )
    return hashlib.sha256(body).hexdigest()


class ResultCache:
    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        max_entries: int = 100_000,
        max_pending: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._max_pending = max_pending
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, InferenceResult]] = OrderedDict()
        # request_id -> content key of requests routed and not yet answered
        self._pending: OrderedDict[str, str] = OrderedDict()
        # Entries taken since the last `take_new()` (for the state topic).
        self._new: list[tuple[str, InferenceResult]] = []
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> InferenceResult | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[0] <= self._ttl:
            self.hits += 1
            return entry[1]
        if entry is not None:
            del self._entries[key]
        self.misses += 1
        return None

    def expect(self, request_id: str, key: str) -> None:
        """Remember that `request_id`'s result, when it comes, answers `key`."""
        self._pending[request_id] = key
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)

    def offer(self, result: InferenceResult) -> bool:
        """A result seen on the result topic; cached if it answers an expected request."""
        key = self._pending.pop(result.request_id, None)
        if key is None or result.status is not Status.OK or result.cached:
            return False
        self._put(key, result, self._clock())
        self._new.append((key, result))
        return True

    def restore(self, key: str, result: InferenceResult, *, age_s: float) -> bool:
        """An entry from the state topic, `age_s` old; False if already past the TTL."""
        if age_s > self._ttl or result.status is not Status.OK:
            return False
        self._put(key, result, self._clock() - max(0.0, age_s))
        return True

    def take_new(self) -> list[tuple[str, InferenceResult]]:
        """Entries taken from the result topic since the last call."""
        new, self._new = self._new, []
        return new

    def _put(self, key: str, result: InferenceResult, stamp: float) -> None:
        self._entries[key] = (stamp, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def answer_from(
    cached: InferenceResult, request: InferenceRequest, *, now_ms: int
) -> InferenceResult:
    """The cached result re-addressed to `request`."""
    total = None if request.created_ms is None else float(now_ms - request.created_ms)
    return cached.model_copy(
        update={
            "request_id": request.request_id,
            "cached": True,
            "produced_ms": now_ms,
            "timings": cached.timings.model_copy(update={"total_ms": total, "queue_ms": 0.0}),
        }
    )
