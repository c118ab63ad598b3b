"""`potluck ops trace ALLOC`: the trace an allocation was requested under.

The event store puts the current span's W3C `traceparent` into the metadata
of every event it appends (potluck.events.tracing), so the first event of
`alloc-<id>` names the trace of the HTTP request that asked for it; that
trace goes on through the relay, hostd's Docker calls and its reports. Later
events of the allocation carry the traces of what changed it (a report, a
release), listed too.

Where the pool keeps its spans locally (a pool from `potluck up`, whose
processes append them to a JSON-lines file), the trace itself is read back
from that file and printed as a tree.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from potluck.contracts.allocation_events import alloc_stream
from potluck.events import EventStore
from potluck.events.tracing import trace_carrier_of
from potluck.kernel.trace_spans import (
    SpanRecord,
    parse_traceparent,
    read_spans,
    span_tree,
    spans_files,
    walk,
    waterfall,
)
from potluck.ops import OpsError

__all__ = [
    "AllocationTrace",
    "find_trace",
    "parse_traceparent",
    "trace_spans",
    "tree_lines",
    "waterfall_dicts",
]


@dataclass(frozen=True)
class AllocationTrace:
    alloc_id: str
    trace_id: str
    span_id: str
    first_event: str
    position: int
    #: Every event of the allocation with the trace it was recorded in.
    events: list[dict[str, Any]]

    def as_dict(self, viewer_url: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alloc_id": self.alloc_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "first_event": self.first_event,
            "position": self.position,
            "events": self.events,
        }
        if viewer_url:
            out["url"] = viewer_url.format(trace_id=self.trace_id)
        return out


def _alloc_id(value: str) -> str:
    value = value.strip()
    return value.removeprefix("alloc-")


async def find_trace(store: EventStore, alloc: str) -> AllocationTrace:
    alloc_id = _alloc_id(alloc)
    if not alloc_id:
        raise OpsError("give an allocation id, e.g. a-91bc03d2e4f5")
    if alloc_id.startswith("j-"):
        # A job is no allocation: each of its tasks' allocations is traced under the job's request.
        raise OpsError(
            f"{alloc_id} is a job's id: give one of its tasks' allocation ids "
            f"(`potluck job show {alloc_id}` lists them), each traced under the job's request"
        )
    records = await store.read_stream(alloc_stream(alloc_id))
    if not records:
        raise OpsError(f"no allocation {alloc_id!r} in the log")
    events = []
    for record in records:
        parsed = parse_traceparent(trace_carrier_of(record.metadata).get("traceparent", ""))
        events.append(
            {
                "position": record.position,
                "version": record.version,
                "type": record.type,
                "trace_id": parsed[0] if parsed else None,
                "span_id": parsed[1] if parsed else None,
            }
        )
    first = records[0]
    parsed = parse_traceparent(trace_carrier_of(first.metadata).get("traceparent", ""))
    if parsed is None:
        raise OpsError(
            f"allocation {alloc_id} was recorded without trace context ({first.type} at position "
            f"{first.position} has no traceparent): tracing was off in the allocator then"
        )
    return AllocationTrace(alloc_id, parsed[0], parsed[1], first.type, first.position, events)


def trace_spans(path: Path, trace_id: str) -> list[SpanRecord]:
    return read_spans(spans_files(path), trace_id)


def tree_lines(spans: Sequence[SpanRecord]) -> list[str]:
    """The trace as an indented tree, one span a line: service, span name, duration (and errors)."""
    walked = list(walk(span_tree(spans)))
    width = max((len(node.span.service) for _, node in walked), default=0)
    lines = []
    for depth, node in walked:
        span = node.span
        error = "  ERROR" if span.status == "ERROR" else ""
        lines.append(f"{'  ' * depth}{span.service:<{width}}  {span.name}  {span.duration_ms:.1f} ms{error}")
    return lines


def waterfall_dicts(spans: Sequence[SpanRecord]) -> list[dict[str, Any]]:
    return [asdict(row) for row in waterfall(spans)]
