"""A simulated accelerator for capacity planning (`SLUICEGATE_BACKEND=simulated`).

A batch takes `a + b x padded cost` seconds on the simulated card (padded
cost = batch size x its largest member's cost, in the model's unit: tokens
or pixels), with `a` and `b` per model x device kind taken from published
figures (docs/scaling.md, "The simulated accelerator", gives the sources and
the conversions). Outputs have the real models' shape (a 384-d unit vector
per text, empty OCR text), so results flow end to end like the null model's.

One simulated GPU is one **device file** holding the card's timeline:
every worker process that names the same file (`SLUICEGATE_SIMULATED__DEVICE_FILE`)
queues its batches on it under an exclusive `flock`, so batches from all
the processes on that card run one after another (a batch starts when the
card is free), as kernels of separate CUDA contexts time-slice on a GPU
without MPS. The file also holds the card's totals (modelled busy time,
batches, items), so any process can read how busy the card was: that is
the utilisation the benchmark reports (`ops/bench/simulated.py`).

A first version held the lock for the whole batch in a thread of the
worker; on this loaded 2-core host the thread's GIL hand-offs (sleep,
file I/O, unlock) held a 0.4 ms batch for ~30 ms, a cost of the
simulation, not of the worker. The worker now only reserves its slot and
awaits its end on the event loop, as it awaits a Triton call.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sluicegate.inference.io import ModelInputs, Outputs
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.cost import MAX_SEQ_TOKENS, image_pixels
from sluicegate.schemas.errors import WireError

from ..errors import BackendRejected
from ..variants import ServedVariants, Variant

__all__ = [
    "LATENCY",
    "DeviceCounters",
    "DeviceKind",
    "LatencyModel",
    "SimulatedBackend",
    "SimulatedDevice",
    "approx_tokens",
    "padded_cost",
    "utilisation",
]

DeviceKind = Literal["a100", "h100"]


@dataclass(frozen=True, kw_only=True)
class LatencyModel:
    """Seconds one batch holds the card: `a_ms + b_ms * padded_cost`, in milliseconds."""

    a_ms: float  # fixed cost per batch: launches, copies, the pipeline's small kernels
    b_ms: float  # per unit of padded cost: one token (text-embed) or one pixel (ocr)

    def seconds(self, padded: int) -> float:
        return (self.a_ms + self.b_ms * padded) / 1000.0


_MPX = 1_000_000
# Sources and conversions: docs/scaling.md, "The simulated accelerator".
# text-embed: NVIDIA's TensorRT BERT-Base FP16 figures on an A100 40GB
# (0.64 ms at 1 x 128 tokens, 15.91 ms at 128 x 128), scaled by MiniLM-L6's
# share of BERT-Base's per-token work (6/12 layers x (384/768)^2 = 1/8) and,
# for `a`, its share of the layers (1/2); H100 = A100 / 2 (MLPerf v2.1:
# Hopper 1.5-2.5x Ampere on most benchmarks, more on NLP with FP8).
# ocr: PaddleOCR's PP-OCRv4_mobile_det, 3.13 ms per image in its
# high-performance (TensorRT) mode on a V100, ~0.7 Mpx per detector input;
# the recogniser counted as much again; A100 = V100 / 2, H100 = A100 / 2.
LATENCY: dict[tuple[str, DeviceKind], LatencyModel] = {
    ("text-embed", "a100"): LatencyModel(a_ms=0.26, b_ms=0.94e-3 / 8),
    ("text-embed", "h100"): LatencyModel(a_ms=0.20, b_ms=0.94e-3 / 16),
    ("ocr", "a100"): LatencyModel(a_ms=1.5, b_ms=4.5 / _MPX),
    ("ocr", "h100"): LatencyModel(a_ms=1.0, b_ms=2.25 / _MPX),
}
for _kind in ("a100", "h100"):
    # doc-match = OCR of the page + MiniLM over two short texts: the OCR term dominates.
    _ocr = LATENCY[("ocr", _kind)]
    LATENCY[("doc-match", _kind)] = LatencyModel(a_ms=_ocr.a_ms * 1.2, b_ms=_ocr.b_ms)


def latency_model(model: str, kind: DeviceKind) -> LatencyModel:
    try:
        return LATENCY[(model, kind)]
    except KeyError:
        known = ", ".join(sorted({m for m, _ in LATENCY}))
        raise BackendRejected(
            f"the simulated {kind} has no latency figures for model {model!r}; it simulates {known}"
        ) from None


def padded_cost(costs: Sequence[int]) -> int:
    """What the batch costs the card: every member padded to the largest."""
    return len(costs) * max(costs) if costs else 0


@dataclass(frozen=True, kw_only=True)
class DeviceCounters:
    """A simulated card's timeline and totals since its file was created."""

    busy_ns: int = 0  # modelled batch time (the a + b x cost figures), nanoseconds
    batches: int = 0
    items: int = 0
    # When the card finishes the last batch queued on it (time.monotonic_ns()).
    free_at_ns: int = 0
    # Results handed back later than their batch's end (the host's timer
    # resolution and load): time the card may sit idle that is not the worker's doing.
    late_ns: int = 0

    _FORMAT = struct.Struct("<5q")

    def pack(self) -> bytes:
        return self._FORMAT.pack(
            self.busy_ns, self.batches, self.items, self.free_at_ns, self.late_ns
        )

    @classmethod
    def unpack(cls, data: bytes) -> DeviceCounters:
        if len(data) < cls._FORMAT.size:
            return cls()  # a new (empty) device file
        busy, batches, items, free_at, late = cls._FORMAT.unpack(data[: cls._FORMAT.size])
        return cls(busy_ns=busy, batches=batches, items=items, free_at_ns=free_at, late_ns=late)

    def reserve(self, *, now_ns: int, duration_ns: int, items: int) -> DeviceCounters:
        """The card with one more batch queued: it starts when the card is free (or now)."""
        start = max(now_ns, self.free_at_ns)
        return replace(
            self,
            busy_ns=self.busy_ns + duration_ns,
            batches=self.batches + 1,
            items=self.items + items,
            free_at_ns=start + duration_ns,
        )

    def plus_late(self, late_ns: int) -> DeviceCounters:
        return replace(self, late_ns=self.late_ns + max(0, late_ns))


def utilisation(before: DeviceCounters, after: DeviceCounters, wall_s: float) -> float:
    """Share of `wall_s` the card spent on modelled batch work between two readings."""
    if wall_s <= 0:
        raise ValueError(f"wall time must be positive, got {wall_s}")
    return (after.busy_ns - before.busy_ns) / 1e9 / wall_s


class SimulatedDevice:
    """One simulated GPU, shared by every process that opens the same file.

    The file holds the card's timeline (`DeviceCounters`). `reserve` queues a
    batch on it under an exclusive `flock` held for one read and one write:
    the batch starts when every batch queued before it, by any process, has
    finished, as kernels of separate CUDA contexts queue on a GPU without
    MPS. Nothing sleeps under the lock: the caller waits for the returned end
    itself (an `asyncio.sleep` in the worker), so the simulation costs the
    worker no thread and no GIL hand-offs that a Triton call would not.
    """

    def __init__(self, *, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def reserve(self, seconds: float, *, items: int) -> tuple[int, int]:
        """Queue a batch of `seconds` on the card; its (start, end) on `time.monotonic_ns()`,
        a clock every process of the host shares."""
        duration = math.ceil(seconds * 1e9)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            before = DeviceCounters.unpack(os.pread(self._fd, 64, 0))
            after = before.reserve(now_ns=time.monotonic_ns(), duration_ns=duration, items=items)
            os.pwrite(self._fd, after.pack(), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return after.free_at_ns - duration, after.free_at_ns

    def record_late(self, late_ns: int) -> None:
        """Count how long after its end a batch's results were handed back."""
        if late_ns <= 0:
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            counters = DeviceCounters.unpack(os.pread(self._fd, 64, 0)).plus_late(late_ns)
            os.pwrite(self._fd, counters.pack(), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def counters(self) -> DeviceCounters:
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        try:
            return DeviceCounters.unpack(os.pread(self._fd, 64, 0))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def private_device_file(kind: DeviceKind) -> Path:
    """A device file of this process alone (no `device_file` configured)."""
    fd, name = tempfile.mkstemp(prefix=f"sluicegate-simulated-{kind}-", suffix=".dev")
    os.close(fd)
    return Path(name)


# What the simulated card answers for: the versions the cpu target serves
# (ops/models/versions.py); the latency model is the same for each.
_VERSIONS = ("1", "2")
_EMBED_DIM = 384
# One shared unit vector: the right shape and norm, built once (outputs are only read).
_UNIT = [1.0 / math.sqrt(_EMBED_DIM)] * _EMBED_DIM


class SimulatedBackend:
    """Runs every batch on a `SimulatedDevice` and answers right-shaped empty outputs."""

    def __init__(
        self, *, device: SimulatedDevice, kind: DeviceKind, time_scale: float = 1.0
    ) -> None:
        """`time_scale` multiplies every batch's modelled latency (1.0: the published card)."""
        self._device = device
        self._kind = kind
        self._scale = time_scale

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]:
        latency = latency_model(model, self._kind)
        tokens, costs = _price(model, batch)
        seconds = self._scale * latency.seconds(padded_cost(costs))
        _, end = self._device.reserve(seconds, items=len(batch))
        await asyncio.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
        self._device.record_late(time.monotonic_ns() - end)
        if model == "text-embed":
            return [{"embedding": _UNIT, "tokens": n} for n in tokens]
        if model == "ocr":
            return [{"text": "", "score": 0.0, "lines": []} for _ in batch]
        return [{"ocr_text": "", "similarity": 0.0} for _ in batch]

    async def model_version(self, model: str) -> str:
        return lookup(model).version

    async def variants(self, model: str) -> ServedVariants:
        """Versions 1 and 2, the ones the stack's routes name (the router always sends
        one), at the card's fp16; results say `device_kind: simulated-<card>`."""
        device = f"simulated-{self._kind}"
        variants = [
            Variant(version=v, precision="fp16", triton_model=model, device_kind=device)
            for v in _VERSIONS
        ]
        return ServedVariants(model=model, variants=variants, default_version=lookup(model).version)

    async def close(self) -> None:
        self._device.close()


def approx_tokens(text: str) -> int:
    """Word pieces of `text`, estimated: its words plus [CLS] and [SEP], capped like the model.

    Not the model's tokenizer on purpose: the worker has already counted the
    real tokens once to price the request, and a Triton model would count
    them again in its own process, not in the worker's. On the benchmark's
    text mix the estimate sums to 88 % of the real count (9,466 vs 10,710).
    """
    return min(MAX_SEQ_TOKENS, 2 + len(text.split()))


def _price(model: str, batch: Sequence[ModelInputs]) -> tuple[list[int], list[int]]:
    """Tokens and cost per input (images: the detector's pixels, read from the header)."""
    spec = lookup(model)
    tokens = [sum(approx_tokens(t) for t in item.texts) for item in batch]
    try:
        pixels = [sum(image_pixels(img) for img in item.images) for item in batch]
    except WireError as exc:
        raise BackendRejected(f"{exc.code}: {exc}") from exc
    costs = [spec.cost(tokens=t, pixels=p) for t, p in zip(tokens, pixels, strict=True)]
    return tokens, costs
