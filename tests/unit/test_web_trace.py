"""An allocation's page: its trace (web/trace.py, _trace.html) and how to reach it (web/connect.py).

What must hold: the trace the allocation was requested under is found from its first event's
traceparent; its spans are read from the local spans file and drawn as SVG rows, names escaped;
a viewer URL links out; an allocation recorded without trace context says so.
"""

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import jinja2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from potluck.allocator.web.connect import GATEWAY_ADDRESS, plain_ssh_line
from potluck.allocator.web.routes import HERE
from potluck.allocator.web.trace import trace_of
from potluck.events import RecordedEvent
from potluck.telemetry import JsonLinesSpanExporter

TRACE = "4303378a64ec1232e93520658e208aa4"


def requested(traceparent: str | None) -> RecordedEvent:
    metadata = {"traceparent": traceparent} if traceparent else {}
    return RecordedEvent(
        1, uuid4(), "alloc-a-1", 1, "AllocationRequested", 1, "{}", metadata, datetime.now(UTC)
    )


def spans_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "traces.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "potluck-allocator"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(str(path))))
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("POST /v1/allocations") as root,
        tracer.start_as_current_span("<script>alert(1)</script>"),
    ):
        pass
    context = root.get_span_context()
    return path, f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


def render(trace: object, *, operator: bool = False) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    session = {"operator": operator}
    return env.get_template("_trace.html").render(alloc={"alloc_id": "a-1"}, trace=trace, session=session)


async def test_the_spans_of_the_allocations_trace_are_drawn_as_rows_with_names_escaped(
    tmp_path: Path,
) -> None:
    path, traceparent = spans_file(tmp_path)
    trace = await trace_of([requested(traceparent)], {"POTLUCK_TRACES_FILE": str(path)})

    assert trace is not None
    assert trace.trace_id == traceparent.split("-")[1]
    assert [(r.depth, r.name) for r in trace.rows] == [
        (0, "POST /v1/allocations"),
        (1, "<script>alert(1)</script>"),
    ]
    html = render(trace)
    assert html.count("<rect") == 2
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # `potluck ops trace` is an operator's command: said to an operator only.
    assert "potluck ops trace" not in html
    assert "As a tree: <code>potluck ops trace a-1</code>" in render(trace, operator=True)


async def test_a_viewer_url_links_out_and_an_untraced_allocation_says_so(tmp_path: Path) -> None:
    env = {"POTLUCK_TRACE_VIEWER_URL": "http://127.0.0.1:16686/trace/{trace_id}"}
    linked = await trace_of([requested(f"00-{TRACE}-00f067aa0ba902b7-01")], env)
    assert linked is not None
    assert linked.viewer_url == f"http://127.0.0.1:16686/trace/{TRACE}"
    assert f'href="http://127.0.0.1:16686/trace/{TRACE}"' in render(linked)

    missing = await trace_of(
        [requested(f"00-{TRACE}-00f067aa0ba902b7-01")], {"POTLUCK_TRACES_FILE": str(tmp_path / "none")}
    )
    assert missing is not None
    assert missing.rows == []
    assert missing.spans_file is not None
    assert "No span of this trace" in render(missing)

    assert await trace_of([requested(None)], env) is None
    assert "recorded without trace context" in render(None)


def test_the_plain_ssh_line_names_the_gateway_the_operator_gave_or_placeholders() -> None:
    assert plain_ssh_line("a-1", {GATEWAY_ADDRESS: "127.0.0.1:2222"}) == "ssh -p 2222 a-1@127.0.0.1"
    assert plain_ssh_line("a-1", {GATEWAY_ADDRESS: "[::1]:22"}) == "ssh -p 22 a-1@[::1]"
    for unusable in ({}, {GATEWAY_ADDRESS: "gateway"}, {GATEWAY_ADDRESS: "host:port"}):
        assert plain_ssh_line("a-1", unusable) == "ssh -p GATEWAY_PORT a-1@GATEWAY_HOST"
