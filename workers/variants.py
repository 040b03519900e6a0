"""Which model version and precision a request runs at: the variants a pool serves.

A worker reads, once at start, what its Triton serves for its model
(`TritonBackend.variants`: every version of ``<model>`` and of each
``<model>-<precision>``, with the precision and device each declares) into a
`ServedVariants` table. Each record then asks for a version and a precision:

- version: the request's ``parameters["model_version"]`` (a producer that
  skips the router pins it), else the router's ``sg-model-version`` header,
  else the repository's default version. A version the pool does not serve
  is answered ``version_unavailable``; never a silent substitute.
- precision: the request's ``parameters["precision"]`` is a pin: a version
  without that variant is answered ``precision_unavailable``. The router's
  ``sg-precision`` header is its policy's *preference* for the pool: where
  the version has no variant at that precision, the version's native
  precision runs, and the result, telemetry and span say which ran
  (`Resolved.fell_back` is logged and set on the span).

Both values are untrusted (headers and request fields come from producers):
they are matched against the table and never used to build a name or a path.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sluicegate.schemas.control import PRECISION_HEADER, VERSION_HEADER
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import InferenceRequest

__all__ = ["Refused", "Resolved", "ServedVariants", "Variant", "requested"]

VERSION_PARAM = "model_version"
PRECISION_PARAM = "precision"


@dataclass(frozen=True, order=True)
class Variant:
    """One servable (version, precision) of a model and where Triton serves it."""

    version: str
    precision: str
    triton_model: str  # `<model>` or `<model>-<precision>`
    device_kind: str = "cpu"  # cpu, cuda or rocm
    native: bool = True  # served under the plain model name (the version's own precision)


@dataclass(frozen=True)
class Resolved:
    variant: Variant
    fell_back: str | None = None  # the preferred precision that was not there


class Refused(Exception):
    """A record asks for a version or precision this pool does not serve (`code` says which)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    variant: Variant | None = None  # nothing runs
    fell_back: str | None = None


@dataclass(frozen=True)
class Asked:
    version: str | None
    precision: str | None
    pinned_precision: bool  # from the request itself: no fallback


def requested(request: InferenceRequest, headers: Iterable[tuple[str, bytes]]) -> Asked:
    """The version and precision a record asks for (request fields first, then headers)."""
    hdrs = {k: v for k, v in headers if k in (VERSION_HEADER, PRECISION_HEADER)}

    def header(name: str) -> str | None:
        raw = hdrs.get(name)
        return None if raw is None else raw.decode(errors="replace")

    version = request.parameters.get(VERSION_PARAM)
    precision = request.parameters.get(PRECISION_PARAM)
    return Asked(
        version=str(version) if version is not None else header(VERSION_HEADER),
        precision=str(precision) if precision is not None else header(PRECISION_HEADER),
        pinned_precision=precision is not None,
    )


@dataclass(frozen=True)
class ServedVariants:
    """Every variant one pool serves for one model, and its default version."""

    model: str
    variants: Sequence[Variant]
    default_version: str
    _index: Mapping[tuple[str, str], Variant] = field(init=False, repr=False, compare=False)
    # version -> its variants, native first (`of`): computed once, read for every record.
    _by_version: Mapping[str, tuple[Variant, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"{self.model}: a pool must serve at least one variant")
        index = {(v.version, v.precision): v for v in sorted(self.variants, key=lambda v: v.native)}
        object.__setattr__(self, "_index", index)
        by_version = {
            version: tuple(
                sorted(
                    (v for v in self.variants if v.version == version), key=lambda v: not v.native
                )
            )
            for version in {v.version for v in self.variants}
        }
        object.__setattr__(self, "_by_version", by_version)

    @property
    def versions(self) -> list[str]:
        return sorted({v.version for v in self.variants}, key=_version_order)

    def describe(self) -> str:
        """`1 (int8), 2 (fp32, fp16)`: for logs and error messages."""
        parts = []
        for version in self.versions:
            precisions = [v.precision or "?" for v in self.of(version)]
            parts.append(f"{version} ({', '.join(precisions)})")
        return ", ".join(parts)

    def of(self, version: str) -> list[Variant]:
        """The variants of `version`, its native one first."""
        return list(self._by_version.get(version, ()))

    def place(
        self, request: InferenceRequest, headers: Iterable[tuple[str, bytes]]
    ) -> Resolved | Refused:
        """The variant a record runs on (`requested` then `resolve`), or why it cannot run."""
        return self.resolve(requested(request, headers))

    def resolve(self, asked: Asked) -> Resolved | Refused:
        version = asked.version or self.default_version
        choices = self.of(version)
        if not choices:
            return Refused(
                ErrorCode.VERSION_UNAVAILABLE,
                f"{self.model} version {_shown(version)} is not served by this pool "
                f"(it serves {self.describe()}); {ErrorCode.VERSION_UNAVAILABLE.message}",
            )
        if asked.precision is None:
            return Resolved(choices[0])
        exact = self._index.get((version, asked.precision))
        if exact is not None:
            return Resolved(exact)
        if asked.pinned_precision:
            return Refused(
                ErrorCode.PRECISION_UNAVAILABLE,
                f"{self.model} version {version} has no {_shown(asked.precision)} variant "
                f"here (it is built at {', '.join(v.precision for v in choices)}); "
                f"{ErrorCode.PRECISION_UNAVAILABLE.message}",
            )
        return Resolved(choices[0], fell_back=asked.precision)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _shown(value: str) -> str:
    """An untrusted value for a message: quoted, bounded, control characters escaped."""
    return repr(value[:40])
