"""Model config parameters per version (no Triton import: unit-testable anywhere)."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["version_parameters"]

_VERSIONED = re.compile(r"^v[0-9]+\.")


def version_parameters(params: Mapping[str, str], version: str) -> dict[str, str]:
    """`params` as version `version` sees them: ``v<version>.<key>`` overrides ``<key>``."""
    prefix = f"v{version}."
    base = {k: v for k, v in params.items() if not _VERSIONED.match(k)}
    base.update({k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)})
    return base
