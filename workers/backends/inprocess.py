"""In-process inference: the model runs inside the worker, no server.

The embedded default when no Triton is wanted (`SLUICEGATE_BACKEND=onnxruntime`),
and the engine's seam for the benchmark's null model. The model code is
injected as one `BatchRunner` per model (the composition root in `ops` builds
them from the same ONNX Runtime pipelines the Triton models run), so this
package never imports `ops`.

Each model gets one thread of its own, like one Triton model instance: batches
of one model run one after the other, off the event loop, while the engine
keeps fetching and the other in-flight batch waits its turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from sluicegate.inference.io import BatchRunner, ModelInputs, Outputs
from sluicegate.schemas.errors import ErrorCode

from ..errors import BackendRejected
from ..variants import ServedVariants, Variant


class InProcessBackend:
    """Runs injected `BatchRunner`s in one dedicated thread per model.

    A runner's `ValueError` (bad input: an undecodable image, an image too
    large for the model) and any other exception become `BackendRejected`
    for the batch, which the engine bisects down to the poison input, as it
    does for Triton's INVALID_ARG and INTERNAL answers.
    """

    def __init__(self, *, runners: Mapping[str, BatchRunner], version: str = "1") -> None:
        self._runners = dict(runners)
        self._version = version
        self._threads = {
            name: ThreadPoolExecutor(1, thread_name_prefix=f"sg-model-{name}")
            for name in self._runners
        }

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]:
        runner = self._runners.get(model)
        if runner is None:
            raise BackendRejected(
                f"this worker's in-process backend has no model {model!r}; "
                f"it serves {', '.join(sorted(self._runners)) or 'nothing'}"
            )
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._threads[model], runner, list(batch))
        except ValueError as exc:
            code = getattr(exc, "code", ErrorCode.INVALID_INPUT)
            raise BackendRejected(f"{code}: {exc}") from exc
        except Exception as exc:
            raise BackendRejected(f"internal: {type(exc).__name__}: {exc}") from exc
        if len(outputs) != len(batch):
            raise BackendRejected(
                f"internal: model {model!r} returned {len(outputs)} outputs for {len(batch)}"
            )
        return outputs

    async def model_version(self, model: str) -> str:
        return self._version

    async def variants(self, model: str) -> ServedVariants:
        """One variant: this process runs one build per model (its precision unrecorded)."""
        return ServedVariants(
            model=model,
            variants=[Variant(version=self._version, precision="", triton_model=model)],
            default_version=self._version,
        )

    async def close(self) -> None:
        for pool in self._threads.values():
            pool.shutdown(wait=True, cancel_futures=True)


class NullBackend:
    """Answers every input at once with empty outputs: the engine's own overhead, measured."""

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]:
        return [{} for _ in batch]

    async def model_version(self, model: str) -> str:
        return "null"

    async def variants(self, model: str) -> ServedVariants:
        variant = Variant(version="null", precision="", triton_model=model)
        return ServedVariants(model=model, variants=[variant], default_version="null")

    async def close(self) -> None:
        return None
