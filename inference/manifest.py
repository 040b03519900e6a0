"""The repository manifest: a sha256 for every artifact a model version loads.

``build_repository`` records, per model, every file the model reads: its
config(s), ``model.py``, the ONNX files inside the repository and the weight
files it references in the installed model packages. :func:`verify_model`
re-hashes them; the Python-backend models call it in ``initialize`` (through
``backends._triton.prepare_model``), so a model version whose files changed
after the build refuses to load, and Triton reports the load as failed.

Hashing is streamed (1 MiB reads); the reference models total ~130 MB, a
fraction of a second per model on load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "ManifestError",
    "artifact_entries",
    "read_manifest",
    "sha256_file",
    "verify_model",
    "verify_repository",
]

MANIFEST_NAME = ".sluicegate-manifest.json"


class ManifestError(RuntimeError):
    """An artifact is missing or differs from the manifest; the model must not load."""

    code = "manifest_mismatch"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.code}: {message}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def artifact_entries(repository: Path, files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Manifest entries for `files`: keyed by repository-relative path, else absolute."""
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        path = path.absolute()
        try:
            key = str(path.relative_to(repository.absolute()))
        except ValueError:
            key = str(path)
        entries[key] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return dict(sorted(entries.items()))


def read_manifest(repository: Path) -> dict[str, Any]:
    path = repository / MANIFEST_NAME
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(
            f"{path} is missing; rebuild the repository with `sluicegate models build`"
        ) from None
    except ValueError as exc:
        raise ManifestError(f"{path} is not JSON ({exc}); rebuild it") from None
    return manifest


def _check(repository: Path, model: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
    for key, want in entries.items():
        path = Path(key) if Path(key).is_absolute() else repository / key
        if not path.is_file():
            raise ManifestError(
                f"model {model!r}: artifact {path} is missing; "
                "rebuild with `sluicegate models build`"
            )
        got = sha256_file(path)
        if got != want["sha256"]:
            raise ManifestError(
                f"model {model!r}: {path} has sha256 {got[:16]}…, the manifest says "
                f"{str(want['sha256'])[:16]}…; the file changed after the build: rebuild with "
                f"`sluicegate models build` (or reinstall the model packages)"
            )


def verify_model(repository: Path, model: str) -> None:
    """Raise :class:`ManifestError` unless every artifact of `model` matches its sha256."""
    artifacts = read_manifest(repository).get("artifacts", {})
    if model not in artifacts:
        raise ManifestError(
            f"model {model!r} is not in {repository / MANIFEST_NAME}; rebuild the repository"
        )
    _check(repository, model, artifacts[model])


def verify_repository(repository: Path) -> list[str]:
    """Verify every model in the manifest; returns their names."""
    artifacts: dict[str, Any] = read_manifest(repository).get("artifacts", {})
    if not artifacts:
        raise ManifestError(f"{repository / MANIFEST_NAME} lists no artifacts; rebuild it")
    for model, entries in artifacts.items():
        _check(repository, model, entries)
    return sorted(artifacts)
