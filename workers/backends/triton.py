"""Triton Inference Server over gRPC (tritonclient's asyncio client).

Maps the reference models' tensors to and from `Outputs`, puts a client
deadline on every call, and maps tritonclient's single exception type onto
our `BackendError`s by gRPC status. With ``transport="shm"`` the inputs go
through system shared memory (`triton_shm.ShmPool`) instead of the gRPC
message: for a Triton on the same host.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tritonclient.grpc.aio as grpcclient
from opentelemetry.trace import TracerProvider
from tritonclient.utils import InferenceServerException

from sluicegate.runtime.tracing import get_tracer
from sluicegate.schemas.catalog import CATALOG

from ..errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from ..tracing import grpc_client_span
from ..variants import ServedVariants
from .base import ModelInputs, Outputs
from .triton_shm import ShmPool
from .triton_variants import read_variants

Transport = Literal["grpc", "shm"]
# gRPC metadata carrying the key of Triton's restricted admin APIs.
ADMIN_HEADER = "triton-grpc-protocol-admin-key"


@dataclass(frozen=True)
class _Io:
    build: Callable[[Sequence[ModelInputs]], list[tuple[str, np.ndarray[Any, Any]]]]
    outputs: tuple[str, ...]
    parse: Callable[[dict[str, np.ndarray[Any, Any]], int], Outputs]


def _bytes_column(values: Sequence[bytes]) -> np.ndarray[Any, Any]:
    return np.array(list(values), dtype=np.object_).reshape(-1, 1)


def _text(batch: Sequence[ModelInputs]) -> np.ndarray[Any, Any]:
    return _bytes_column([item.texts[0].encode() for item in batch])


def _image(batch: Sequence[ModelInputs]) -> np.ndarray[Any, Any]:
    return _bytes_column([item.images[0] for item in batch])


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_MODELS: dict[str, _Io] = {
    "text-embed": _Io(
        build=lambda b: [("TEXT", _text(b))],
        outputs=("EMBEDDING", "TOKENS"),
        parse=lambda o, i: {
            "embedding": [float(x) for x in o["EMBEDDING"][i]],
            "tokens": int(o["TOKENS"][i].reshape(-1)[0]),
        },
    ),
    "ocr": _Io(
        build=lambda b: [("IMAGE", _image(b))],
        outputs=("TEXT", "SCORE", "LINES"),
        parse=lambda o, i: {
            "text": _str(o["TEXT"][i].reshape(-1)[0]),
            "score": float(o["SCORE"][i].reshape(-1)[0]),
            "lines": json.loads(_str(o["LINES"][i].reshape(-1)[0])),
        },
    ),
    "doc-match": _Io(
        build=lambda b: [("IMAGE", _image(b)), ("TEXT", _text(b))],
        outputs=("OCR_TEXT", "SIMILARITY"),
        parse=lambda o, i: {
            "ocr_text": _str(o["OCR_TEXT"][i].reshape(-1)[0]),
            "similarity": float(o["SIMILARITY"][i].reshape(-1)[0]),
        },
    ),
}

_RETRIABLE = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED"}


def map_error(exc: InferenceServerException, *, url: str) -> BackendError:
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return BackendTimeout(f"Triton at {url} did not answer within the client deadline")
    if status in _RETRIABLE or "failed to connect" in message.lower():
        return BackendUnavailable(
            f"Triton at {url} is unavailable ({status or 'no status'}: {message}); "
            "check `sluicegate status`"
        )
    return BackendRejected(f"Triton rejected the batch ({status or 'no status'}): {message}")


class TritonBackend:
    """One gRPC channel to one Triton server; safe to share between tasks."""

    def __init__(
        self,
        *,
        url: str,
        timeout_s: float = 60.0,
        transport: Transport = "grpc",
        shm_slots: int = 4,
        admin_key: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._url = url
        # Shared-memory (un)registration is an admin API on a locked-down Triton.
        self._admin = {ADMIN_HEADER: admin_key} if admin_key else None
        self._tracer = get_tracer(tracer_provider)
        self._timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)
        self._defaults: dict[str, str] = {}  # model -> its repository default version
        self._shm = (
            ShmPool(slots=shm_slots, register=self._register, unregister=self._unregister)
            if transport == "shm"
            else None
        )

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]:
        """Run `batch` on `model` (a precision variant's name maps like its model) at
        `version` ("": the repository's `default_version`, not Triton's highest)."""
        io = _MODELS.get(model) or _MODELS.get(model.rsplit("-", 1)[0])
        version = version or await self._default_version(model)
        if io is None:
            raise BackendRejected(f"the Triton backend has no tensor mapping for model {model!r}")
        requested = [grpcclient.InferRequestedOutput(name) for name in io.outputs]
        span = grpc_client_span(self._tracer, url=self._url, model=model, batch_size=len(batch))
        try:
            async with self._inputs(io.build(batch)) as inputs:
                with span as metadata:  # carries traceparent when tracing is on
                    response = await self._client.infer(
                        model,
                        inputs,
                        model_version=version,
                        outputs=requested,
                        client_timeout=self._timeout_s,
                        headers=metadata or None,
                    )
        except InferenceServerException as exc:
            if self._shm is not None and "shared memory" in (exc.message() or "").lower():
                # A restarted Triton has forgotten our regions: register them
                # again on the next attempt, which the engine's retry makes.
                self._shm.forget_registrations()
                raise BackendUnavailable(
                    f"Triton at {self._url} lost its shared-memory registrations "
                    f"({exc.message()}); registering again"
                ) from exc
            raise map_error(exc, url=self._url) from exc
        arrays = {name: response.as_numpy(name) for name in io.outputs}
        for name, array in arrays.items():
            # A Python backend stub running under numpy 2 answers with the
            # right shape and no data; refuse that instead of emitting zeros.
            if array is None or array.shape[0] != len(batch) or array.size == 0:
                raise BackendRejected(
                    f"Triton returned output {name} with shape "
                    f"{None if array is None else array.shape} for a batch of {len(batch)}"
                )
        return [io.parse(arrays, i) for i in range(len(batch))]

    @contextlib.asynccontextmanager
    async def _inputs(
        self, arrays: list[tuple[str, np.ndarray[Any, Any]]]
    ) -> AsyncIterator[list[grpcclient.InferInput]]:
        tensors = [grpcclient.InferInput(name, list(a.shape), "BYTES") for name, a in arrays]
        if self._shm is None:
            for tensor, (_, array) in zip(tensors, arrays, strict=True):
                tensor.set_data_from_numpy(array)
            yield tensors
            return
        async with self._shm.place([a for _, a in arrays]) as refs:
            for tensor, (region, size, offset) in zip(tensors, refs, strict=True):
                tensor.set_shared_memory(region, size, offset)
            yield tensors

    async def _register(self, name: str, key: str, size: int) -> None:
        try:
            await self._client.register_system_shared_memory(name, key, size, headers=self._admin)
        except InferenceServerException as exc:
            raise map_error(exc, url=self._url) from exc

    async def _unregister(self, name: str) -> None:
        try:
            await self._client.unregister_system_shared_memory(name, headers=self._admin)
        except InferenceServerException as exc:
            raise map_error(exc, url=self._url) from exc

    async def model_version(self, model: str) -> str:
        try:
            meta = await self._client.get_model_metadata(model, as_json=True)
        except InferenceServerException as exc:
            raise map_error(exc, url=self._url) from exc
        versions = meta.get("versions") or ["1"]
        return str(versions[-1])

    async def _default_version(self, model: str) -> str:
        """The config's `default_version`; without the admin key (model-config is a
        restricted API) the catalog's version; "" (Triton's choice) for other names."""
        if model not in self._defaults:
            try:
                config = await self._client.get_model_config(
                    model, as_json=True, headers=self._admin
                )
                params = config.get("config", {}).get("parameters") or {}
                default = str(params.get("default_version", {}).get("string_value", ""))
            except InferenceServerException:
                default = CATALOG[model].version if model in CATALOG else ""
            self._defaults[model] = default
        return self._defaults[model]

    async def variants(self, model: str) -> ServedVariants:
        """Every version and precision variant of `model` this server has ready."""
        try:
            return await read_variants(self._client, model, headers=self._admin)
        except InferenceServerException as exc:
            if "restricted" in (exc.message() or ""):
                raise BackendRejected(
                    f"Triton at {self._url} restricts its model-config API: set "
                    "SLUICEGATE_TRITON__ADMIN_KEY to its admin key so the worker can read "
                    "which versions and precisions it serves"
                ) from exc
            raise map_error(exc, url=self._url) from exc
        except LookupError as exc:
            raise BackendUnavailable(f"Triton at {self._url}: {exc}") from exc

    async def wait_ready(self, model: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(model))
        except InferenceServerException:
            return False

    async def close(self) -> None:
        if self._shm is not None:
            await self._shm.close()
        await self._client.close()
