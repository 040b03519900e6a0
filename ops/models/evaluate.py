"""`sluicegate models eval`: every variant against fp32, on data rendered here.

- Embeddings (MiniLM): sentences generated locally (a different seed from the
  int8 calibration set). Per variant: mean and worst cosine similarity to the
  fp32 embedding of the same sentence, and nearest-neighbour agreement (the
  share of sentences whose closest other sentence is the same as under fp32).
  "Accuracy loss" is 1 - nearest-neighbour agreement.
- OCR (PP-OCRv4 det + rec): text lines rendered with Pillow from known strings
  (`ops/samples.py`). Per variant: character error rate against the truth;
  "accuracy loss" is the CER increase over fp32, in percentage points.
- Latency: the same pipelines the Triton models run (ONNX Runtime, CPU, two
  intra-op threads), median of `repeats` timed calls per batch size after a
  warm-up, on this machine. Absolute numbers are this machine's; compare the
  variants within one report only.

Writes `report` (Markdown) and a PNG plot beside it.
"""

from __future__ import annotations

import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sluicegate.inference.pipelines.embed import TextEmbedder
from sluicegate.inference.pipelines.ocr import OcrPipeline
from sluicegate.ops.models.build import weight_paths
from sluicegate.ops.models.targets import variant_files
from sluicegate.ops.models.variants.convert import calibration_sentences
from sluicegate.ops.samples import cer, render_text_image

__all__ = ["EvalError", "run_eval"]

VARIANTS = ("fp32", "fp16", "int8", "int8-dynamic", "bf16")
OCR_VARIANTS = ("fp32", "fp16", "fp16-det", "int8", "bf16")
EMBED_BATCHES = (1, 8, 32)
OCR_BATCHES = (1, 4)
Progress = Callable[[str], None]
_WORDS = (
    "invoice order total paid shipment pallet refund account contract March "
    "Lyon 2041 77812 342.50 balance due signed note ticket toner"
).split()


class EvalError(RuntimeError):
    code = "eval_failed"


@dataclass
class Row:
    model: str
    variant: str
    size_mb: float
    accuracy: dict[str, float]  # metric name -> value
    loss_pct: float  # accuracy lost against fp32, in percent (points for CER)
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median ms


Timing = tuple[Row, int, Callable[[], object]]  # row, batch size, the call


def _time_interleaved(timings: Sequence[Timing], repeats: int) -> None:
    """Median ms per call into each row, taking the variants in turn each round.

    Round-robin so that load from other processes on a shared machine falls on
    every variant alike, and the ratios between variants stay meaningful.
    """
    for _, _, fn in timings:
        fn()  # warm-up: session arenas, first-call graph work
    samples: list[list[float]] = [[] for _ in timings]
    for _ in range(repeats):
        for i, (_, _, fn) in enumerate(timings):
            start = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - start)
    for (row, batch, _), times in zip(timings, samples, strict=True):
        row.latency_ms[batch] = statistics.median(times) * 1000


def _embed_rows(variants: Path, n: int, timings: list[Timing], say: Progress) -> list[Row]:
    sentences = calibration_sentences(n, seed=1234)
    tokenizer = weight_paths()["tokenizer"]
    ref: npt.NDArray[np.float32] | None = None
    ref_nn: npt.NDArray[np.int64] | None = None
    rows = []
    shipped = ("int8 (shipped, cpu stack)", weight_paths()["embed_model"])
    candidates = [(v, variant_files(variants, v).embed) for v in VARIANTS]  # type: ignore[arg-type]
    for variant, path in [*candidates, shipped]:
        say(f"embedding eval: {variant}")
        emb = TextEmbedder(model_path=path, tokenizer_path=tokenizer)
        vecs = np.concatenate(
            [emb.embed(sentences[i : i + 32]).embeddings for i in range(0, n, 32)]
        )
        sims = vecs @ vecs.T
        np.fill_diagonal(sims, -2)
        nn = sims.argmax(axis=1)
        if ref is None:
            ref, ref_nn = vecs, nn
        assert ref_nn is not None
        cos = (vecs * ref).sum(axis=1)
        agree = float((nn == ref_nn).mean())
        row = Row(
            "text-embed (MiniLM)",
            variant,
            path.stat().st_size / 1e6,
            {
                "mean cosine vs fp32": float(cos.mean()),
                "worst cosine": float(cos.min()),
                "NN agreement": agree,
            },
            (1 - agree) * 100,
        )
        for b in EMBED_BATCHES:
            batch = sentences[:b]
            timings.append((row, b, partial(emb.embed, batch)))
        rows.append(row)
    return rows


def _ocr_set(n: int) -> list[tuple[str, bytes]]:
    rng = random.Random(99)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 6)))
        out.append((text, render_text_image(text, glyph_px=rng.choice((28, 36, 48)))))
    return out


def _ocr_rows(variants: Path, n: int, timings: list[Timing], say: Progress) -> list[Row]:
    samples = _ocr_set(n)
    rows = []
    base_cer: float | None = None
    for variant in OCR_VARIANTS:
        files = variant_files(variants, variant)  # type: ignore[arg-type]
        say(f"OCR eval: {variant}")
        pipe = OcrPipeline(det_model=files.det, rec_model=files.rec)
        images = [pipe.decode(data) for _, data in samples]
        texts = [r.text for i in range(0, n, 4) for r in pipe.run(images[i : i + 4])]
        rate = statistics.fmean(cer(t, h) for (t, _), h in zip(samples, texts, strict=True))
        if base_cer is None:
            base_cer = rate
        row = Row(
            "ocr (PP-OCRv4)",
            variant,
            (files.det.stat().st_size + files.rec.stat().st_size) / 1e6,
            {"CER": rate},
            (rate - base_cer) * 100,
        )
        for b in OCR_BATCHES:
            batch = images[:b]
            timings.append((row, b, partial(pipe.run, batch)))
        rows.append(row)
    return rows


def _plot(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4))
    for ax, model in zip(np.atleast_1d(axes), models, strict=True):
        for r in (r for r in rows if r.model == model):
            sizes = sorted(r.latency_ms)
            ax.plot(sizes, [r.latency_ms[s] for s in sizes], marker="o", label=r.variant)
        ax.set_title(f"{model}: latency per batch (CPU)")
        ax.set_xlabel("batch size")
        ax.set_ylabel("median ms per call")
        ax.set_xscale("log", base=2)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(rows: Sequence[Row], plot: Path, *, texts: int, lines: int, repeats: int) -> str:
    out = [
        "# Model variants: accuracy against fp32 and latency",
        "",
        "Generated by `sluicegate models eval` (ops/models/evaluate.py); rerun it to refresh.",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python "
        f"{platform.python_version()}; ONNX Runtime on the CPU with 2 intra-op threads; "
        f"median of {repeats} rounds after a warm-up, variants timed in turn each round "
        "(other jobs shared the cores: compare variants within this report only). "
        f"Embedding set: {texts} generated sentences; OCR set: {lines} rendered text lines.",
        "",
        "Accuracy loss: embeddings, 1 - nearest-neighbour agreement with fp32 (%); OCR, "
        "character-error-rate increase over fp32 (percentage points). The seeds promise "
        "int8 < 1.5 %.",
        "",
    ]
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        metrics = list(mine[0].accuracy)
        sizes = sorted(mine[0].latency_ms)
        head = ["variant", "MB", *metrics, "accuracy loss", *[f"ms @ batch {s}" for s in sizes]]
        out += [f"## {model}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in mine:
            cells = [
                r.variant,
                f"{r.size_mb:.1f}",
                *[f"{r.accuracy[m]:.6f}" for m in metrics],
                f"{r.loss_pct:+.2f} %",
                *[f"{r.latency_ms[s]:.1f}" for s in sizes],
            ]
            out.append("| " + " | ".join(cells) + " |")
        int8 = next(r for r in mine if r.variant == "int8")
        verdict = "within" if int8.loss_pct < 1.5 else "NOT within"
        out += ["", f"int8: {int8.loss_pct:+.2f} % accuracy loss, {verdict} the 1.5 % promise.", ""]
    out += [f"![latency per batch size]({plot.name})", ""]
    return "\n".join(out)


def run_eval(
    variants: Path,
    report: Path,
    *,
    texts: int = 200,
    lines: int = 40,
    repeats: int = 5,
    progress: Progress | None = None,
) -> Path:
    """Evaluate every variant under `variants`; write `report` and its PNG; return `report`."""
    say = progress or (lambda _m: None)
    for variant in dict.fromkeys(VARIANTS + OCR_VARIANTS):
        files = variant_files(variants, variant)  # type: ignore[arg-type]
        for path in (files.embed, files.det, files.rec):
            if not path.is_file():
                raise EvalError(f"{path} is missing; build it with `sluicegate models variants`")
    timings: list[Timing] = []
    rows = _embed_rows(variants, texts, timings, say) + _ocr_rows(variants, lines, timings, say)
    say(f"timing {len(timings)} calls x {repeats} rounds")
    _time_interleaved(timings, repeats)
    report.parent.mkdir(parents=True, exist_ok=True)
    plot = report.with_suffix(".png")
    _plot(rows, plot)
    report.write_text(_markdown(rows, plot, texts=texts, lines=lines, repeats=repeats))
    return report
