"""A trace's spans read back from the pool's local JSON-lines files, as a tree and as a waterfall.

Every process of a pool from `potluck up` appends its finished spans to one
file (potluck.telemetry's JsonLinesSpanExporter: the OpenTelemetry SDK's JSON
form of a span, one per line, plus the exact start and end in nanoseconds).
`read_spans` picks out one trace's spans; `span_tree` and `waterfall` only
arrange what was read, for `potluck ops trace` and the allocation's page.

The files are written while they are read, by several processes, and rotate:
a torn last line, a line of another shape or a field we do not know is
skipped or ignored, never an error.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "SpanNode",
    "SpanRecord",
    "WaterfallRow",
    "parse_traceparent",
    "read_spans",
    "span_tree",
    "spans_files",
    "walk",
    "waterfall",
]


@dataclass(frozen=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    #: UNSET, OK or ERROR.
    status: str = "UNSET"
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6


@dataclass
class SpanNode:
    span: SpanRecord
    children: list["SpanNode"] = field(default_factory=list)


@dataclass(frozen=True)
class WaterfallRow:
    depth: int
    name: str
    service: str
    kind: str
    #: Where the span starts and how long it lasts, as fractions of the whole trace (0..1).
    offset: float
    width: float
    duration_ms: float
    status: str
    span_id: str


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, parent span id) of a W3C traceparent, or None if it is not one."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    trace_id, span_id = parts[1].lower(), parts[2].lower()
    try:
        int(trace_id, 16)
        int(span_id, 16)
    except ValueError:
        return None
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return trace_id, span_id


def _hex_id(value: Any, digits: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().lower().removeprefix("0x")
    if not text or len(text) > digits:
        return None
    try:
        number = int(text, 16)
    except ValueError:
        return None
    return format(number, f"0{digits}x") if number else None


def _iso_ns(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _ns(raw: dict[str, Any], exact: str, iso: str) -> int | None:
    value = raw.get(exact)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return _iso_ns(raw.get(iso))


def parse_span(line: str) -> SpanRecord | None:
    """One line of a spans file as a SpanRecord, or None when it is not a whole span."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    context = raw.get("context")
    if not isinstance(context, dict):
        return None
    trace_id = _hex_id(context.get("trace_id"), 32)
    span_id = _hex_id(context.get("span_id"), 16)
    start = _ns(raw, "start_time_unix_nano", "start_time")
    end = _ns(raw, "end_time_unix_nano", "end_time")
    if trace_id is None or span_id is None or start is None or end is None:
        return None
    resource = raw.get("resource")
    resource_attributes = resource.get("attributes") if isinstance(resource, dict) else None
    service = resource_attributes.get("service.name") if isinstance(resource_attributes, dict) else None
    status = raw.get("status")
    status_code = status.get("status_code") if isinstance(status, dict) else None
    attributes = raw.get("attributes")
    name = raw.get("name")
    kind = raw.get("kind")
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=_hex_id(raw.get("parent_id"), 16),
        name=name if isinstance(name, str) else "?",
        service=service if isinstance(service, str) else "?",
        kind=kind.removeprefix("SpanKind.") if isinstance(kind, str) else "INTERNAL",
        start_ns=start,
        end_ns=max(start, end),
        status=status_code if status_code in ("UNSET", "OK", "ERROR") else "UNSET",
        attributes=attributes if isinstance(attributes, dict) else {},
    )


def _lines(path: Path, needle: bytes) -> Iterable[str]:
    try:
        with path.open("rb") as file:
            for line in file:
                # Most lines belong to other traces: skip them before parsing any JSON.
                if needle in line:
                    yield line.decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return


def spans_files(path: Path | str) -> list[Path]:
    """A spans file and the older part it rotated to (`<file>.1`), oldest first, those that exist.

    What to give `read_spans` for the file a process's POTLUCK_TRACES_FILE names.
    """
    current = Path(path)
    return [p for p in (current.with_name(current.name + ".1"), current) if p.is_file()]


def read_spans(paths: Sequence[Path | str], trace_id: str) -> list[SpanRecord]:
    """The spans of `trace_id` in these files (oldest file first), each span once, by start time."""
    wanted = _hex_id(trace_id, 32)
    if wanted is None:
        return []
    seen: dict[str, SpanRecord] = {}
    for path in paths:
        for line in _lines(Path(path), wanted.encode()):
            span = parse_span(line)
            if span is not None and span.trace_id == wanted:
                seen.setdefault(span.span_id, span)
    return sorted(seen.values(), key=lambda s: (s.start_ns, s.span_id))


def _order(span: SpanRecord) -> tuple[int, int, str]:
    return (span.start_ns, span.end_ns, span.span_id)


def span_tree(spans: Sequence[SpanRecord]) -> list[SpanNode]:
    """The spans as trees: children under their parent, each level by start time.

    A span whose parent is not among `spans` (not exported yet, dropped, in a
    rotated-away file) is a root. Every span appears exactly once, even if the
    parent links are broken into a cycle: the cycle is cut at its earliest span.
    """
    unique: dict[str, SpanRecord] = {}
    for span in spans:
        unique.setdefault(span.span_id, span)
    nodes = {span_id: SpanNode(span) for span_id, span in unique.items()}
    children: dict[str, list[SpanNode]] = {}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = node.span.parent_id
        if parent is not None and parent in nodes and parent != node.span.span_id:
            children.setdefault(parent, []).append(node)
        else:
            roots.append(node)

    placed: set[str] = set()

    def attach(top: SpanNode) -> None:
        stack = [top]
        placed.add(top.span.span_id)
        while stack:
            node = stack.pop()
            for child in sorted(children.get(node.span.span_id, []), key=lambda n: _order(n.span)):
                if child.span.span_id not in placed:
                    placed.add(child.span.span_id)
                    node.children.append(child)
                    stack.append(child)

    roots.sort(key=lambda n: _order(n.span))
    for root in roots:
        attach(root)
    # What is left hangs in cycles of parent links: cut each at its earliest span.
    for node in sorted(nodes.values(), key=lambda n: _order(n.span)):
        if node.span.span_id not in placed:
            roots.append(node)
            attach(node)
    roots.sort(key=lambda n: _order(n.span))
    return roots


def walk(roots: Sequence[SpanNode]) -> Iterable[tuple[int, SpanNode]]:
    """(depth, node) of every node, depth first, in the tree's order."""
    stack = [(0, node) for node in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, child) for child in reversed(node.children))


def waterfall(spans: Sequence[SpanRecord]) -> list[WaterfallRow]:
    """One row per span in tree order, placed on the trace's time line.

    0 is the trace's first start and 1 its last end; a trace of no length fills the line.
    """
    roots = span_tree(spans)
    if not roots:
        return []
    everything = [node.span for _, node in walk(roots)]
    begin = min(s.start_ns for s in everything)
    total = max(s.end_ns for s in everything) - begin
    rows = []
    for depth, node in walk(roots):
        span = node.span
        if total > 0:
            offset = (span.start_ns - begin) / total
            width = (span.end_ns - span.start_ns) / total
        else:
            offset, width = 0.0, 1.0
        offset = min(1.0, max(0.0, offset))
        rows.append(
            WaterfallRow(
                depth=depth,
                name=span.name,
                service=span.service,
                kind=span.kind,
                offset=offset,
                width=min(1.0 - offset, max(0.0, width)),
                duration_ms=span.duration_ms,
                status=span.status,
                span_id=span.span_id,
            )
        )
    return rows
