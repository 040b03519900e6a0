"""The bad-input corpus: one class of malformed request per module.

Each module's `cases()` returns `Case`s. A case names the work topic's model
it is sent to, the raw record (value, key, headers), and what the worker must
answer: a result with `status` and error `code` for `request_id`, and (when
`dlq` is true) a DLQ record with the same code. `tests/integration/
test_corpus.py` sends every case through real workers and a real broker.
The classes already covered by `tests/integration/test_bad_input.py`
(garbage bytes, wrong field types, unknown model, a non-image with an image
mime type, inputs that do not fit the model) are not repeated here.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

import msgpack


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    model: str  # whose work topic receives the record
    value: bytes | None
    request_id: str  # also the record key
    code: str | None  # expected error code (None: an ok or expired result)
    status: str = "error"
    dlq: bool = True
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def packed(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases += module.cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return cases
