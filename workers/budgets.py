"""Default batch budgets per model and pool.

Units: padded tokens for text-embed, padded detector pixels for ocr and
doc-match (a doc-match query adds 256 px per token). Every value can be
overridden with `SLUICEGATE_BATCH__*`; these are starting points, sized as
follows:

- cpu (2 cores, ONNX Runtime, 2 intra-op threads): throughput flattens above
  ~2,000 padded tokens per call for MiniLM, and a 1280x736 page (~1 M px)
  takes ~0.3-1 s to OCR, so batches stay small and latency bounded. A CPU
  spends as long on a padding token as on a real one and gains little from
  width, so batches keep to one half-octave size bucket (`bucket_spread=0`):
  at 120 requests/s of the benchmark's text mix through Kafka, batches
  wasted 37 % of their padded tokens at spread 2 and 11 % at spread 0.
- cpu OCR: one page per batch. `sluicegate tune --model ocr --pool cpu
  --sizes 1,2,3,4` timed the benchmark's ~0.73 Mpx pages here, in batches of
  1-4 covering the same pages (2 cores, load average 9-10, three runs), and
  throughput fell with batch size every time: 0.73 / 0.57 / 0.32 / 0.30 Mpx/s
  for batches of 1 / 2 / 3 / 4 in the last run (the two before it, timing one
  page against batches of other pages: 1.04 / 0.32 / 0.39 / 0.50 and
  0.50 / 0.21 / 0.27 / 0.43). Batching buys a CPU nothing here, and the
  benchmark agreed (budget ÷ unbatched on images 0.84-0.96). `max_batch_size=1`, so a batch
  never waits for a second page; doc-match keeps the batched policy until
  measured.
- a100 (40/80 GB, TensorRT/CUDA FP16): MiniLM at 256 x 256 tokens and 32
  pages of ~1 M px per call keep the SMs busy well inside memory.
- mi200 (64 GB per GCD, MIGraphX/ROCm BF16): three quarters of the A100
  figures until measured on the card.
"""

from __future__ import annotations

from .batcher import BatchPolicy

_MP = 1_000_000
# The OCR model refuses a detector input over 4096 x 4096 px by itself.
_OCR_HARD = 4096 * 4096

DEFAULTS: dict[tuple[str, str], BatchPolicy] = {
    ("text-embed", "cpu"): BatchPolicy(
        max_batch_size=64,
        max_queue_delay_microseconds=10_000,
        budget=2_048,
        hard_limit=4_096,
        bucket_spread=0,
    ),
    ("text-embed", "a100"): BatchPolicy(
        max_batch_size=256, max_queue_delay_microseconds=5_000, budget=65_536, hard_limit=65_536
    ),
    ("text-embed", "mi200"): BatchPolicy(
        max_batch_size=192, max_queue_delay_microseconds=5_000, budget=49_152, hard_limit=65_536
    ),
    # One page per batch: measured, see the module docstring.
    ("ocr", "cpu"): BatchPolicy(
        max_batch_size=1,
        max_queue_delay_microseconds=0,
        budget=6 * _MP,
        hard_limit=_OCR_HARD,
        bucket_spread=0,
    ),
    ("ocr", "a100"): BatchPolicy(
        max_batch_size=32,
        max_queue_delay_microseconds=10_000,
        budget=32 * _MP,
        hard_limit=32 * _MP,
    ),
    ("ocr", "mi200"): BatchPolicy(
        max_batch_size=24,
        max_queue_delay_microseconds=10_000,
        budget=24 * _MP,
        hard_limit=24 * _MP,
    ),
}
for _pool in ("a100", "mi200"):
    DEFAULTS[("doc-match", _pool)] = DEFAULTS[("ocr", _pool)]
# Not measured yet (`tune` has no doc-match mix, which needs queries): the
# batched OCR policy it had before the OCR measurement.
DEFAULTS[("doc-match", "cpu")] = BatchPolicy(
    max_batch_size=8,
    max_queue_delay_microseconds=50_000,
    budget=6 * _MP,
    hard_limit=_OCR_HARD,
    bucket_spread=0,
)


def default_policy(model: str, pool: str) -> BatchPolicy:
    try:
        return DEFAULTS[(model, pool)]
    except KeyError:
        raise ValueError(
            f"no default batch budget for model {model!r} on pool {pool!r}; "
            "set SLUICEGATE_BATCH__BUDGET and SLUICEGATE_BATCH__HARD_LIMIT"
        ) from None
