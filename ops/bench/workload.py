"""The benchmark's request mix: heavy-tailed text lengths and image sizes, seeded.

Texts: token counts drawn log-normally (median ~11, p99 ~170 word pieces,
like real query/document mixes), built from a fixed vocabulary and then
counted with the model's real tokenizer. Images: rendered pages whose aspect
ratios follow a heavy tail, so the OCR resize policy (short side to 736 px)
gives detector inputs from ~0.5 to ~4 Mpx. Each item carries its real cost,
measured the way the worker measures it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache

from sluicegate.ops.samples import PHRASES, TEXTS, render_page
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.cost import TokenCounter, measure
from sluicegate.workers.backends.base import ModelInputs

__all__ = ["Item", "Workload", "image_workload", "poisson_arrivals", "text_workload"]

_VOCAB = sorted({w.strip(".,:").lower() for t in (*TEXTS, *PHRASES) for w in t.split()} - {""})

# (canvas width, height, weight): mostly landscape pages, a tail of long strips.
_CANVASES = (
    (800, 600, 6),
    (1024, 640, 5),
    (1280, 560, 3),
    (1600, 480, 2),
    (2000, 360, 1),
)


@dataclass(frozen=True, kw_only=True)
class Item:
    model: str
    inputs: ModelInputs
    tokens: int
    pixels: int
    cost: int  # the batcher's unit: tokens or pixels


@dataclass(frozen=True, kw_only=True)
class Workload:
    name: str  # "text" or "image"
    model: str
    items: tuple[Item, ...]

    def item(self, i: int) -> Item:
        return self.items[i % len(self.items)]


def text_workload(count: int = 512, *, seed: int = 11) -> Workload:
    rng = random.Random(seed)
    counter = TokenCounter()
    spec = lookup("text-embed")
    texts = []
    for _ in range(count):
        # ln-normal: median 11 tokens, sigma 1.17 puts p99 near 170.
        target = min(250, max(3, round(math.exp(rng.gauss(math.log(11), 1.17)))))
        words = max(1, round((target - 2) / 1.25))
        texts.append(" ".join(rng.choice(_VOCAB) for _ in range(words)))
    items = []
    for text, tokens in zip(texts, counter.count(texts), strict=True):
        cost = spec.cost(tokens=tokens, pixels=0)
        items.append(
            Item(
                model=spec.name,
                inputs=ModelInputs(texts=(text,)),
                tokens=tokens,
                pixels=0,
                cost=cost,
            )
        )
    return Workload(name="text", model=spec.name, items=tuple(items))


@cache
def _page(width: int, height: int, phrase_index: int) -> bytes:
    lines = [PHRASES[(phrase_index + k) % len(PHRASES)] for k in range(max(1, height // 160))]
    return render_page(lines, canvas=(width, height), glyph_px=32)


def image_workload(count: int = 48, *, seed: int = 13) -> Workload:
    rng = random.Random(seed)
    spec = lookup("ocr")
    counter = TokenCounter()
    weights = [w for _, _, w in _CANVASES]
    items = []
    for i in range(count):
        width, height, _ = rng.choices(_CANVASES, weights=weights)[0]
        data = _page(width, height, i % 4)
        cost = measure(spec, texts=(), images=(data,), counter=counter)
        items.append(
            Item(
                model=spec.name,
                inputs=ModelInputs(images=(data,)),
                tokens=0,
                pixels=cost.pixels,
                cost=cost.units,
            )
        )
    return Workload(name="image", model=spec.name, items=tuple(items))


def poisson_arrivals(rate: float, duration_s: float, *, seed: int) -> list[float]:
    """Open-loop arrival offsets (seconds) of a Poisson process at `rate` per second."""
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        times.append(t)
        t += rng.expovariate(rate)
    return times
