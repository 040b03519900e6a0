"""Read the collector's file output (OTLP JSON lines) and show a request's trace as a tree.

A request's own trace holds the client's `send`, the router's and worker's
`process` spans and the result's `send`; the batch that ran it lives in its
own trace (a root linking every request it carried), with the Triton CLIENT
span and Triton's server spans under it. `request_traces` returns both: the
request's trace, then every trace its spans link to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.tree import Tree

from sluicegate.runtime.tracing import REQUEST_ID

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
# Attributes worth a glance in the tree (never payload; spans carry none).
_SHOWN = (
    REQUEST_ID,
    "messaging.destination.partition.id",
    "messaging.kafka.offset",
    "messaging.batch.message_count",
    "sg.cost",
    "sg.queue_wait_ms",
    "sg.status",
    "error.type",
    "model_name",
)


@dataclass(frozen=True, kw_only=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id)
    error: bool = False

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attrs(items: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or ()}


def _kind(raw: Any) -> str:
    if isinstance(raw, int):
        return KINDS.get(raw, str(raw))
    return str(raw).removeprefix("SPAN_KIND_")


def parse_line(line: str) -> Iterator[SpanRecord]:
    """The spans of one OTLP JSON line (an ExportTraceServiceRequest)."""
    doc = json.loads(line)
    for rs in doc.get("resourceSpans", []):
        service = str(_attrs(rs.get("resource", {}).get("attributes")).get("service.name", "?"))
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                yield SpanRecord(
                    trace_id=sp["traceId"],
                    span_id=sp["spanId"],
                    parent_id=sp.get("parentSpanId", ""),
                    name=sp.get("name", ""),
                    kind=_kind(sp.get("kind", 0)),
                    service=service,
                    start_ns=int(sp.get("startTimeUnixNano", 0)),
                    end_ns=int(sp.get("endTimeUnixNano", 0)),
                    attributes=_attrs(sp.get("attributes")),
                    links=tuple((ln["traceId"], ln["spanId"]) for ln in sp.get("links", [])),
                    error=sp.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR"),
                )


def load_spans(path: Path) -> list[SpanRecord]:
    """Every span in the file; a last line still being written is skipped."""
    spans: list[SpanRecord] = []
    if not path.exists():
        return spans
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            spans.extend(parse_line(line))
        except (ValueError, KeyError):
            continue
    return spans


def request_traces(spans: list[SpanRecord], request_id: str) -> list[list[SpanRecord]]:
    """The request's trace first, then each trace one of its spans links to (its batch)."""
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    own = [s.trace_id for s in spans if s.attributes.get(REQUEST_ID) == request_id]
    ordered = list(dict.fromkeys(own))
    for trace_id in list(ordered):
        for span in by_trace[trace_id]:
            for linked, _ in span.links:
                if linked in by_trace and linked not in ordered:
                    ordered.append(linked)
    return [sorted(by_trace[t], key=lambda s: s.start_ns) for t in ordered]


def _label(span: SpanRecord) -> str:
    shown = ", ".join(f"{k}={span.attributes[k]}" for k in _SHOWN if k in span.attributes)
    mark = " [red]ERROR[/]" if span.error else ""
    links = f" [dim]links={len(span.links)}[/]" if span.links else ""
    return (
        f"[bold]{span.name}[/] [cyan]{span.kind}[/] [green]{span.service}[/] "
        f"{span.duration_ms:.1f} ms{mark}{links}" + (f" [dim]{shown}[/]" if shown else "")
    )


def render(traces: list[list[SpanRecord]], request_id: str) -> Tree:
    """One rich Tree: a branch per trace, spans nested by parent, siblings by start time."""
    root = Tree(f"request [bold]{request_id}[/]")
    for i, spans in enumerate(traces):
        title = "trace" if i == 0 else "linked trace (batch)"
        branch = root.add(f"{title} {spans[0].trace_id}")
        ids = {s.span_id for s in spans}
        children: dict[str, list[SpanRecord]] = {}
        for span in spans:
            parent = span.parent_id if span.parent_id in ids else ""
            children.setdefault(parent, []).append(span)

        _grow(branch, children, "")
    return root


def _grow(node: Tree, children: dict[str, list[SpanRecord]], parent: str) -> None:
    for span in children.get(parent, []):
        _grow(node.add(_label(span)), children, span.span_id)
