"""A model repository of the benchmark's own: `<model>-dyn` with Triton's dynamic batcher on.

``build_bench_repository(dest, ("text-embed",))`` writes::

    dest/
      .sluicegate-manifest.json     sha256 of every artifact (the models verify it on load)
      text-embed-dyn/config.pbtxt    the cpu target's text-embed config, renamed, plus
                                     dynamic_batching { preferred_batch_size, max_queue_delay }
      text-embed-dyn/1/model.py      re-exports sluicegate.inference.triton.merged

The default repository (``build.py``, loaded by tests, ``make demo`` and
``up``) stays as it is: its models have no dynamic batcher, because the
worker's budget batcher forms the batches and Triton merging requests would
pad past what the worker charged. These copies exist only for the bench's
``triton-dynamic`` mode, on a Triton the bench starts for them and stops.
The repository is rewritten on every call (a few small files; the weights
are read in place).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sluicegate.inference.manifest import MANIFEST_NAME, artifact_entries

from .build import _config_pbtxt, _model_py, _models, weight_paths
from .targets import TARGETS

__all__ = ["DYNAMIC", "DynamicBatching", "build_bench_repository", "dynamic_name"]


@dataclass(frozen=True, kw_only=True)
class DynamicBatching:
    """Triton's `dynamic_batching` knobs for one model (its names, its units)."""

    max_batch_size: int
    preferred_batch_size: tuple[int, ...]
    max_queue_delay_microseconds: int

    def pbtxt(self) -> str:
        sizes = ", ".join(map(str, self.preferred_batch_size))
        return (
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {self.max_queue_delay_microseconds}\n"
            "}\n"
        )


#: What a team would write: text as in Triton's own documentation example
#: (preferred 4 and 8, max 8; 8 was also the best count-N of earlier runs on
#: this mix: with 64, a merged batch padded to its longest text ran ~8 records/s,
#: an eighth of one-at-a-time), with the worker's default delay
#: (workers/config.py). OCR stops at 4 images: Triton pads a merged batch to
#: its largest page, and a count-16 OCR batch of mixed pages took a model stub
#: to 15 GB here.
DYNAMIC = {
    "text-embed": DynamicBatching(
        max_batch_size=8, preferred_batch_size=(4, 8), max_queue_delay_microseconds=10_000
    ),
    "ocr": DynamicBatching(
        max_batch_size=4, preferred_batch_size=(2, 4), max_queue_delay_microseconds=50_000
    ),
}


def dynamic_name(model: str) -> str:
    """The bench-only copy of `model` served with Triton's dynamic batcher."""
    return f"{model}-dyn"


def build_bench_repository(
    dest: Path,
    models: Sequence[str],
    *,
    dynamic: dict[str, DynamicBatching] | None = None,
) -> Path:
    """Write `<model>-dyn` for each of `models` (text-embed, ocr) into `dest`; return it."""
    knobs = dynamic or DYNAMIC
    unknown = [m for m in models if m not in knobs]
    if unknown:
        raise ValueError(f"no dynamic-batching copy of {unknown}; choose from {sorted(knobs)}")
    spec = TARGETS["cpu"]
    base = {m.name: m for m in _models(weight_paths(), spec)}
    dest = dest.absolute()
    shutil.rmtree(dest, ignore_errors=True)
    artifacts = {}
    for name in models:
        dyn = knobs[name]
        model = replace(
            base[name],
            name=dynamic_name(name),
            module="merged",
            max_batch_size=dyn.max_batch_size,
            parameters=(*base[name].parameters, ("merge_model", name)),
        )
        folder = dest / model.name
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(_config_pbtxt(model, spec) + dyn.pbtxt())
        (folder / "1" / "model.py").write_text(_model_py(model))
        external = [Path(v) for _, v in model.parameters if v.startswith("/")]
        inside = sorted(p for p in folder.rglob("*") if p.is_file())
        artifacts[model.name] = artifact_entries(dest, [*inside, *external])
    manifest = {"format": "bench", "models": sorted(artifacts), "artifacts": artifacts}
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return dest
