"""An allocation's trace on its page: the waterfall of the spans the pool kept locally.

The first event of `alloc-<id>` carries the W3C traceparent of the request that
asked for it (potluck.events.tracing). A pool from `potluck up` writes every
process's spans to the file POTLUCK_TRACES_FILE names (potluck.kernel.trace_spans
reads it back); a deployment with a collector sets POTLUCK_TRACE_VIEWER_URL
(`http://.../trace/{trace_id}`) and the page links to that viewer instead.
"""

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from potluck.events import RecordedEvent
from potluck.events.tracing import trace_carrier_of
from potluck.kernel.trace_spans import WaterfallRow, parse_traceparent, read_spans, spans_files, waterfall

__all__ = ["TraceView", "trace_of"]

#: Spans drawn at most: a trace is a request's, tens of spans; past this the page says how many more.
MAX_ROWS = 200


@dataclass(frozen=True)
class TraceView:
    trace_id: str
    rows: list[WaterfallRow] = field(default_factory=list)
    more: int = 0
    viewer_url: str | None = None
    #: Where spans would be read from, when none of this trace's were found there.
    spans_file: str | None = None


def _viewer(trace_id: str, env: Mapping[str, str]) -> str | None:
    template = env.get("POTLUCK_TRACE_VIEWER_URL", "")
    return template.replace("{trace_id}", trace_id) if "{trace_id}" in template else None


async def trace_of(records: Sequence[RecordedEvent], env: Mapping[str, str] = os.environ) -> TraceView | None:
    """The trace the allocation was requested under, or None if it was recorded without one."""
    if not records:
        return None
    parsed = parse_traceparent(trace_carrier_of(records[0].metadata).get("traceparent", ""))
    if parsed is None:
        return None
    trace_id = parsed[0]
    viewer = _viewer(trace_id, env)
    path = env.get("POTLUCK_TRACES_FILE")
    if not path:
        return TraceView(trace_id, viewer_url=viewer)
    # Reading scans the file (up to its rotation size): not on the event loop.
    spans = await asyncio.to_thread(read_spans, spans_files(path), trace_id)
    rows = waterfall(spans)
    return TraceView(
        trace_id,
        rows=rows[:MAX_ROWS],
        more=max(0, len(rows) - MAX_ROWS),
        viewer_url=viewer,
        spans_file=None if rows else path,
    )
