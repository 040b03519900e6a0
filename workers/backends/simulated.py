"""A simulated accelerator for capacity planning (`SLUICEGATE_BACKEND=simulated`).

A batch takes `a + b x padded cost` seconds on the simulated card (padded
cost = batch size x its largest member's cost, in the model's unit: tokens
or pixels), with `a` and `b` per model x device kind taken from published
figures (docs/scaling.md, "The simulated accelerator", gives the sources and
the conversions). Outputs have the real models' shape (a 384-d unit vector
per text, empty OCR text), so results flow end to end like the null model's.

One simulated GPU is one **device file**. Its exclusive `flock` is the GPU:
every worker process that names the same file (`SLUICEGATE_SIMULATED__DEVICE_FILE`)
takes the lock for the whole of each batch, so batches from all the
processes on that card run one after another, as kernels of separate CUDA
contexts time-slice on a GPU without MPS. The file also holds the card's
counters (modelled busy time, held time, batches, items), updated under the
same lock, so any process can read how busy the card was: that is the
utilisation the benchmark reports (`ops/bench/simulated.py`).

The lock, the sleep and the counting run in one thread per worker process,
off the event loop; the pricing (the model's real tokenizer, image headers)
runs there too, before the lock is taken, as a Triton model would do it in
its own process before the GPU.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sluicegate.inference.io import ModelInputs, Outputs
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.cost import TokenCounter, image_pixels
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
    """A simulated card's totals since its file was created."""

    busy_ns: int = 0  # modelled batch time (the a + b x cost figures), nanoseconds
    held_ns: int = 0  # time the lock was really held (>= busy: sleep overshoot on a busy host)
    batches: int = 0
    items: int = 0

    _FORMAT = struct.Struct("<4q")

    def pack(self) -> bytes:
        return self._FORMAT.pack(self.busy_ns, self.held_ns, self.batches, self.items)

    @classmethod
    def unpack(cls, data: bytes) -> DeviceCounters:
        if len(data) < cls._FORMAT.size:
            return cls()  # a new (empty) device file
        busy, held, batches, items = cls._FORMAT.unpack(data[: cls._FORMAT.size])
        return cls(busy_ns=busy, held_ns=held, batches=batches, items=items)

    def plus(self, *, busy_ns: int, held_ns: int, items: int) -> DeviceCounters:
        return DeviceCounters(
            busy_ns=self.busy_ns + busy_ns,
            held_ns=self.held_ns + held_ns,
            batches=self.batches + 1,
            items=self.items + items,
        )


def utilisation(before: DeviceCounters, after: DeviceCounters, wall_s: float) -> float:
    """Share of `wall_s` the card spent on modelled batch work between two readings."""
    if wall_s <= 0:
        raise ValueError(f"wall time must be positive, got {wall_s}")
    return (after.busy_ns - before.busy_ns) / 1e9 / wall_s


class SimulatedDevice:
    """One simulated GPU, shared by every process that opens the same file.

    `run` is blocking (call it off the event loop); `counters` may be read by
    any process at any time (it waits for the batch in progress).
    """

    def __init__(self, *, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def run(self, seconds: float, *, items: int) -> tuple[int, int]:
        """Hold the card for `seconds` (after any other process's batch), then count it.

        Returns when the card was held: (start, end) on `time.monotonic_ns()`,
        a clock all processes of the host share.
        """
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            start = time.monotonic_ns()
            deadline = start + math.ceil(seconds * 1e9)
            while (left := deadline - time.monotonic_ns()) > 0:
                time.sleep(left / 1e9)
            held = time.monotonic_ns() - start
            counters = DeviceCounters.unpack(os.pread(self._fd, 64, 0))
            total = counters.plus(busy_ns=math.ceil(seconds * 1e9), held_ns=held, items=items)
            os.pwrite(self._fd, total.pack(), 0)
            return start, start + held
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
        self._counter: TokenCounter | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sg-simulated")

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]:
        latency = latency_model(model, self._kind)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, model, latency, list(batch))

    def _run(self, model: str, latency: LatencyModel, batch: list[ModelInputs]) -> list[Outputs]:
        tokens, costs = self._price(model, batch)
        self._device.run(self._scale * latency.seconds(padded_cost(costs)), items=len(batch))
        if model == "text-embed":
            return [{"embedding": _UNIT, "tokens": n} for n in tokens]
        if model == "ocr":
            return [{"text": "", "score": 0.0, "lines": []} for _ in batch]
        return [{"ocr_text": "", "similarity": 0.0} for _ in batch]

    def _price(self, model: str, batch: list[ModelInputs]) -> tuple[list[int], list[int]]:
        """Tokens and cost per input, counted the way the worker prices requests."""
        spec = lookup(model)
        if self._counter is None:
            self._counter = TokenCounter()
        try:
            tokens = [sum(self._counter.count(item.texts)) for item in batch]
            pixels = [sum(image_pixels(img) for img in item.images) for item in batch]
        except WireError as exc:
            raise BackendRejected(f"{exc.code}: {exc}") from exc
        costs = [spec.cost(tokens=t, pixels=p) for t, p in zip(tokens, pixels, strict=True)]
        return tokens, costs

    async def model_version(self, model: str) -> str:
        return f"simulated-{self._kind}"

    async def variants(self, model: str) -> ServedVariants:
        version = f"simulated-{self._kind}"
        variant = Variant(version=version, precision="", triton_model=model)
        return ServedVariants(model=model, variants=[variant], default_version=version)

    async def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._device.close()
