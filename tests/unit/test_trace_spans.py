"""A trace's spans read back from the local spans files, arranged as a tree and a waterfall.

The files are the ones potluck.telemetry's JSON-lines exporter writes (and
rotates) while the pool runs; reading must survive what a live, shared file
holds (a torn last line, other traces, other shapes, fields we do not know).
"""

import json
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from potluck.kernel.trace_spans import SpanRecord, read_spans, span_tree, spans_files, walk, waterfall
from potluck.telemetry import JsonLinesSpanExporter, _LineFile

TRACE = "4303378a64ec1232e93520658e208aa4"


def _spans_file(path: Path, service: str = "potluck-allocator") -> tuple[str, TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(str(path))))
    return service, provider


def test_spans_written_by_the_exporter_read_back_as_one_tree_despite_noise(tmp_path: Path) -> None:
    """Two processes' exporters append to one file, with another trace, junk and a torn last line
    among them: reading one trace gives its spans only, each once, parents and timings intact."""
    path = tmp_path / "traces.jsonl"
    _, allocator = _spans_file(path)
    _, hostd = _spans_file(path, "potluck-hostd")
    tracer = allocator.get_tracer("t")
    with tracer.start_as_current_span("POST /v1/allocations", kind=SpanKind.SERVER) as request:
        with tracer.start_as_current_span("events append", kind=SpanKind.CLIENT):
            pass
        with hostd.get_tracer("t").start_as_current_span("docker create+start") as docker:
            docker.set_status(Status(StatusCode.ERROR, "no space"))
    with tracer.start_as_current_span("another request"):
        pass
    trace_id = format(request.get_span_context().trace_id, "032x")
    with path.open("a") as file:
        file.write("not json\n[1, 2]\n")
        file.write(json.dumps({"name": "bad", "context": {"trace_id": trace_id}}) + "\n")
        file.write('{"name": "torn", "context": {"trace_id": "' + trace_id)

    spans = read_spans([tmp_path / "traces.jsonl.1", path], trace_id)
    assert [s.name for s in spans] == ["POST /v1/allocations", "events append", "docker create+start"]
    roots = span_tree(spans)
    assert len(roots) == 1
    assert roots[0].span.service == "potluck-allocator"
    assert roots[0].span.kind == "SERVER"
    assert [(c.span.name, c.span.service) for c in roots[0].children] == [
        ("events append", "potluck-allocator"),
        ("docker create+start", "potluck-hostd"),
    ]
    assert roots[0].children[1].span.status == "ERROR"
    # The exact nanoseconds are kept, not the SDK's microseconds.
    root = roots[0].span
    assert root.start_ns == request.start_time  # type: ignore[attr-defined]
    assert root.end_ns == request.end_time  # type: ignore[attr-defined]
    assert all(root.start_ns <= c.span.start_ns and c.span.end_ns <= root.end_ns for c in roots[0].children)
    # Reading the same spans twice (an old file overlapping the new one) still gives each once.
    assert read_spans([path, path], trace_id) == spans
    assert read_spans([path], "not-a-trace-id") == []


def test_the_sdk_json_without_exact_times_and_with_unknown_fields_is_read(tmp_path: Path) -> None:
    """A span line as the SDK writes it alone (ISO times) and with fields we do not know is read."""
    path = tmp_path / "t.jsonl"
    line = {
        "name": "relay AllocationPlaced",
        "context": {"trace_id": "0x" + TRACE, "span_id": "0x00000000000000ab", "trace_state": "[]"},
        "kind": "SpanKind.PRODUCER",
        "parent_id": None,
        "start_time": "2026-11-30T20:01:58.982020Z",
        "end_time": "2026-11-30T20:01:58.984020Z",
        "status": {"status_code": "OK"},
        "resource": {"attributes": {"service.name": "potluck-registry"}},
        "something_new": {"x": 1},
    }
    path.write_text(json.dumps(line) + "\n")
    (span,) = read_spans([path], TRACE.upper())
    got = (span.span_id, span.parent_id, span.kind, span.status)
    assert got == ("00000000000000ab", None, "PRODUCER", "OK")
    assert span.duration_ms == 2.0


def test_the_file_rotates_at_its_bound_keeping_one_old_file(tmp_path: Path) -> None:
    """Four threads append far more than the bound: the file moves to `.1` when full, nothing but
    the current and one old file exist, neither is much over the bound, and every line is whole."""
    path = tmp_path / "t.jsonl"
    lines = _LineFile(str(path), max_bytes=4096)
    line = "x" * 99

    def write() -> None:
        for _ in range(200):
            lines.write([line])

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl", "t.jsonl.1"]
    for kept in (path, tmp_path / "t.jsonl.1"):
        assert kept.stat().st_size <= 4096
        assert set(kept.read_text().splitlines()) == {line}
    # A single batch larger than the bound is written, not lost.
    big = ["y" * 5000]
    _LineFile(str(tmp_path / "big.jsonl"), max_bytes=4096).write(big)
    assert (tmp_path / "big.jsonl").read_text() == big[0] + "\n"


def test_a_trace_is_read_across_the_rotation(tmp_path: Path) -> None:
    """Spans of one trace written past the file's bound: the current file and `.1` together give
    the newest spans, in order, with no gap; the current file alone gives fewer."""
    path = tmp_path / "traces.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "potluck-hostd"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(str(path), max_bytes=8192)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        for i in range(60):
            with tracer.start_as_current_span(f"child {i:02d}"):
                pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert spans_files(path) == [tmp_path / "traces.jsonl.1", path]
    both = [s.name for s in read_spans(spans_files(path), trace_id)]
    assert len(read_spans([path], trace_id)) < len(both) < 61
    kept = [name for name in both if name != "root"]
    first = int(kept[0].split()[1])
    assert kept == [f"child {i:02d}" for i in range(first, 60)]
    assert both[0] == "root"  # written last (it ends last), read first (it starts first)
    assert spans_files(tmp_path / "nothing.jsonl") == []


# --- the tree and the waterfall, for any spans --------------------------------------------------

_IDS = [format(i, "016x") for i in range(1, 13)]


@st.composite
def span_sets(draw: st.DrawFn) -> list[SpanRecord]:
    """Up to 12 spans whose parents are any id, among them or not (cycles and self-parents too)."""
    count = draw(st.integers(0, len(_IDS)))
    spans = []
    for span_id in _IDS[:count]:
        start = draw(st.integers(0, 10_000))
        spans.append(
            SpanRecord(
                trace_id=TRACE,
                span_id=span_id,
                parent_id=draw(st.none() | st.sampled_from([*_IDS, "00000000000000ff"])),
                name=f"span {span_id}",
                service=draw(st.sampled_from(["potluck-allocator", "potluck-hostd"])),
                kind="INTERNAL",
                start_ns=start,
                end_ns=start + draw(st.integers(0, 10_000)),
            )
        )
    return spans


@given(span_sets())
def test_every_span_appears_exactly_once_in_the_tree(spans: list[SpanRecord]) -> None:
    """Whatever the parent links (missing parents, cycles), each span is in the tree once; a child
    sits under its own parent unless that link had to be cut; siblings are in start order; a span
    whose parent is absent is a root."""
    roots = span_tree(spans)
    placed = [node.span.span_id for _, node in walk(roots)]
    assert sorted(placed) == sorted(s.span_id for s in spans)
    ids = {s.span_id for s in spans}
    for _, node in walk(roots):
        for child in node.children:
            assert child.span.parent_id == node.span.span_id
        starts = [c.span.start_ns for c in node.children]
        assert starts == sorted(starts)
    root_ids = {r.span.span_id for r in roots}
    assert {s.span_id for s in spans if s.parent_id not in ids or s.parent_id == s.span_id} <= root_ids
    assert [r.span.start_ns for r in roots] == sorted(r.span.start_ns for r in roots)


@given(span_sets())
def test_the_waterfall_has_a_row_per_span_inside_the_trace_line(spans: list[SpanRecord]) -> None:
    """One row per span in tree order; offsets and widths stay within 0..1, the first start is at
    0, and a row's depth is its parent's plus one."""
    rows = waterfall(spans)
    assert len(rows) == len(spans)
    assert [r.span_id for r in rows] == [n.span.span_id for _, n in walk(span_tree(spans))]
    for row in rows:
        assert 0.0 <= row.offset <= 1.0
        assert 0.0 <= row.width <= 1.0 - row.offset + 1e-9
    if rows:
        assert min(r.offset for r in rows) == 0.0
        assert rows[0].depth == 0
    depth_of = {r.span_id: r.depth for r in rows}
    for _, node in walk(span_tree(spans)):
        for child in node.children:
            assert depth_of[child.span.span_id] == depth_of[node.span.span_id] + 1


def test_the_waterfall_places_spans_on_the_trace_time_line() -> None:
    """A request of 100 ms with a child from 20 to 70 ms: the child's bar starts at 0.2 of the line
    and is 0.5 long, one level deeper."""

    def span(span_id: str, parent: str | None, start_ms: int, end_ms: int) -> SpanRecord:
        ms = 10**6
        return SpanRecord(TRACE, span_id, parent, span_id, "svc", "INTERNAL", start_ms * ms, end_ms * ms)

    rows = waterfall([span("b" * 16, "a" * 16, 20, 70), span("a" * 16, None, 0, 100)])
    assert [(r.depth, r.offset, r.width, r.duration_ms) for r in rows] == [
        (0, 0.0, 1.0, 100.0),
        (1, 0.2, 0.5, 50.0),
    ]


def test_a_local_pool_keeps_its_spans_unless_a_collector_is_named() -> None:
    """`potluck up` writes spans to its own file only when OTEL_* sends them nowhere else."""
    from potluck.telemetry import collector_configured

    assert not collector_configured({})
    assert not collector_configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not collector_configured({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert collector_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert collector_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert collector_configured({"OTEL_TRACES_EXPORTER": "otlp"})
