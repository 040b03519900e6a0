"""What a Triton server serves of one model: its versions and precision variants.

Reads the repository index and each matching model's config (the
``precision``, ``v<N>.precision``, ``default_version`` and
``execution_providers`` parameters `ops/models/build.py` writes) into a
`ServedVariants` table. Model names: ``<model>`` serves each version at its
native precision, ``<model>-<precision>`` one precision build of some versions.
"""

from __future__ import annotations

from typing import Any

import tritonclient.grpc.aio as grpcclient

from ..variants import ServedVariants, Variant

__all__ = ["PRECISIONS", "read_variants"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def _device(params: dict[str, str], config: dict[str, Any]) -> str:
    providers = params.get("execution_providers", "")
    if "MIGraphX" in providers or "ROCM" in providers:
        return "rocm"
    if "Tensorrt" in providers or "CUDA" in providers:
        return "cuda"
    kinds = {str(g.get("kind", "")) for g in config.get("instance_group", [])}
    return "cuda" if "KIND_GPU" in kinds else "cpu"


async def read_variants(
    client: grpcclient.InferenceServerClient, model: str, *, headers: dict[str, str] | None = None
) -> ServedVariants:
    """The variants of `model` that are READY on the server `client` talks to.

    The repository index and model configs are restricted APIs on a locked
    Triton: `headers` carries the admin key (`SLUICEGATE_TRITON__ADMIN_KEY`).
    Raises tritonclient's `InferenceServerException` (the caller maps it).
    """
    index = await client.get_model_repository_index(as_json=True, headers=headers)
    wanted = {model, *(f"{model}-{p}" for p in PRECISIONS)}
    names = sorted({str(m["name"]) for m in index.get("models", []) if m.get("name") in wanted})
    variants: list[Variant] = []
    default = ""
    for name in names:
        if not await client.is_model_ready(name):
            continue
        config = await client.get_model_config(name, as_json=True, headers=headers)
        config = config.get("config", {})
        params = {
            str(k): str(v.get("string_value", ""))
            for k, v in (config.get("parameters") or {}).items()
        }
        meta = await client.get_model_metadata(name, as_json=True)
        native = name == model
        for version in meta.get("versions") or ["1"]:
            variants.append(
                Variant(
                    version=str(version),
                    precision=params.get(f"v{version}.precision", params.get("precision", "")),
                    triton_model=name,
                    device_kind=_device(params, config),
                    native=native,
                )
            )
        if native:
            default = params.get("default_version", "")
    if not variants:
        raise LookupError(f"Triton serves no ready version of {model!r}")
    versions = sorted({v.version for v in variants if v.native} or {v.version for v in variants})
    if default not in versions:
        default = min(versions, key=lambda v: (len(v), v))
    return ServedVariants(model=model, variants=variants, default_version=default)
