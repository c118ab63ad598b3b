"""One trace follows a user's request through every process; metrics arrive the same way.

The pool's real processes (registry, allocator, hostd, each with its relay)
get the standard OTEL_* variables pointing at a real OTLP/HTTP receiver on
loopback (tests/fixtures/otlp.py); the user makes an allocation over HTTP.
The spans that arrive must form one trace with the right parents, across
processes: the allocator's HTTP request and its log append, the relay's
publish, hostd's consumer, its Docker create+start and its report, and the
allocator's handling of that report.

The last tests build the telemetry in this process: the environment's
choices (OTLP, a JSON-lines file, off, bad values) and the rule that a
database query outside any trace starts none.
"""

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from opentelemetry.trace import SpanKind

from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.telemetry import (
    DEFAULT_OTLP_ENDPOINT,
    SignalPlan,
    TelemetryConfigError,
    build_telemetry,
    plan_telemetry,
)
from tests.e2e.conftest import ops
from tests.fixtures.images import get_allocation
from tests.fixtures.otlp import CollectedSpan, OtlpReceiver
from tests.fixtures.pool import EnrolledHost, Pool, remove_managed_containers
from tests.helpers import json_log

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "POTLUCK_TRACES_FILE",
    "POTLUCK_METRICS_FILE",
)


@pytest.fixture
async def collector() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@contextlib.asynccontextmanager
async def _pool_with(
    tmp_path: Path,
    database_url: str,
    docker_engines: list[DockerEngine],
    monkeypatch: pytest.MonkeyPatch,
    liveness: tuple[float, int, float] = (0.2, 3, 2.0),
    **environ: str,
) -> AsyncIterator[Pool]:
    """The `pool` fixture's processes, started with these telemetry variables (and no other OTEL_*)."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # LocalPool's processes inherit this process's environment.
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    pool = await Pool.create(tmp_path, database_url, liveness=liveness, log_level="DEBUG")
    try:
        await pool.start_central_services()
        yield pool
    finally:
        await pool.close()
        remove_managed_containers(docker_engines)


async def _laptop(pool: Pool, docker_engines: list[DockerEngine]) -> EnrolledHost:
    host = await pool.enroll("laptop-a")
    pool.write_config(host, docker_engines[0])
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    return host


@pytest.fixture
async def traced_pool(
    tmp_path: Path,
    database_url: str,
    docker_engines: list[DockerEngine],
    collector: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Pool]:
    """The `pool` fixture's processes, started with OTEL_* pointing at `collector`."""
    async with _pool_with(
        tmp_path, database_url, docker_engines, monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint
    ) as pool:
        yield pool


@pytest.fixture
async def traced_laptop(traced_pool: Pool, docker_engines: list[DockerEngine]) -> EnrolledHost:
    return await _laptop(traced_pool, docker_engines)


async def request_allocation(pool: Pool) -> tuple[str, str]:
    """A user's allocation requested over HTTP: its id, and the user's token."""
    await pool.wait_api()
    token = await pool.add_user("alice")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "3600"]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(pool.api + "/v1/allocations", json=body, headers=headers) as response,
    ):
        created = await response.json()
        assert response.status == 201, created
    return str(created["id"]), token


async def wait_for_state(pool: Pool, alloc_id: str, token: str, state: str) -> None:
    async with aiohttp.ClientSession() as http:
        shown = await get_allocation(http, pool.api, token, alloc_id, f"?wait={state}&timeout=30")
    assert shown["state"] == state, f"{shown}\n{pool.logs()}"


async def allocate(pool: Pool) -> str:
    """A user's allocation over HTTP, until it runs; its id."""
    alloc_id, token = await request_allocation(pool)
    await wait_for_state(pool, alloc_id, token, "running")
    return alloc_id


def one(spans: list[CollectedSpan], what: str) -> CollectedSpan:
    assert len(spans) == 1, f"expected one {what}, got {[str(s) for s in spans]}"
    return spans[0]


async def test_one_trace_covers_the_request_the_log_the_bus_hostd_and_its_report(
    traced_pool: Pool, traced_laptop: EnrolledHost, collector: OtlpReceiver, database_url: str
) -> None:
    host_id = traced_laptop.host_id
    alloc_id = await allocate(traced_pool)

    server = await collector.wait_for(
        "allocator HTTP span for POST /v1/allocations",
        lambda: collector.find(
            lambda s: (
                s.service == "potluck-allocator" and s.kind == "SERVER" and s.name == "POST /v1/allocations"
            )
        ),
    )
    server = one(server, "POST /v1/allocations server span")
    trace_id = server.trace_id
    assert server.parent_span_id is None

    def named(service: str | tuple[str, ...], kind: str, name: str) -> list[CollectedSpan]:
        services = (service,) if isinstance(service, str) else service
        return [
            s
            for s in collector.trace(trace_id)
            if s.service in services and s.kind == kind and s.name.startswith(name)
        ]

    relays = ("potluck-allocator", "potluck-registry")
    placed_subject = f"potluck.evt.alloc.AllocationPlaced.{host_id}"
    report_subject = f"potluck.report.{host_id}.started"
    running_subject = f"potluck.evt.alloc.AllocationRunning.{host_id}"

    def complete() -> bool:
        spans = collector.trace(trace_id)
        ids = {s.span_id for s in spans}
        return (
            bool(named(relays, "PRODUCER", "relay AllocationRunning"))
            and bool(named("potluck-hostd", "CONSUMER", f"handle {running_subject}"))
            # every parent has arrived: no span hangs off a span we never saw
            and all(s.parent_span_id is None or s.parent_span_id in ids for s in spans)
        )

    await collector.wait_for(f"the whole trace {trace_id}", complete)

    # The log append: a span of the event store inside the HTTP request (and, later in the trace,
    # inside the allocator's handling of hostd's report), and the COPY into the event log
    # below it, in the transaction its group commit shares (or not) with other appends.
    appends = named("potluck-allocator", "CLIENT", "events append")
    assert [s for s in appends if s.parent_span_id == server.span_id], [
        str(s) for s in collector.trace(trace_id)
    ]
    by_id = {s.span_id: s for s in collector.trace(trace_id)}

    def ancestors(span: CollectedSpan) -> set[str]:
        seen: set[str] = set()
        while span.parent_span_id in by_id and span.parent_span_id not in seen:
            seen.add(span.parent_span_id)
            span = by_id[span.parent_span_id]
        return seen

    inserts = [
        s
        for s in collector.trace(trace_id)
        if s.service == "potluck-allocator"
        and s.kind == "CLIENT"
        and "COPY events" in str(s.attributes.get("db.statement", s.attributes.get("db.query.text", "")))
    ]
    assert [s for s in inserts if {a.span_id for a in appends} & ancestors(s)], [str(s) for s in inserts]

    # The relay publishes AllocationPlaced as a child of the request that logged it.
    relay_placed = one(named(relays, "PRODUCER", "relay AllocationPlaced"), "relay of AllocationPlaced")
    assert relay_placed.parent_span_id == server.span_id
    assert relay_placed.attributes["messaging.system"] == "nats"

    # hostd, another process, consumes it in the same trace: the relay's span or the request's.
    consumer = one(named("potluck-hostd", "CONSUMER", f"handle {placed_subject}"), "hostd consumer span")
    assert consumer.parent_span_id in (relay_placed.span_id, server.span_id)
    assert consumer.resource["potluck.host_id"] == host_id

    # Docker create+start inside that consumer span.
    docker = one(named("potluck-hostd", "CLIENT", "docker create+start"), "Docker span")
    assert docker.parent_span_id == consumer.span_id
    assert docker.attributes["potluck.alloc_id"] == alloc_id
    assert docker.attributes["container.image.name"] == DEFAULT_TAG
    assert docker.start_ns >= consumer.start_ns

    # hostd's report, published in the trace of the event that caused it ...
    published = one(named("potluck-hostd", "PRODUCER", f"publish {report_subject}"), "report publish span")
    assert published.parent_span_id == consumer.span_id
    assert published.start_ns >= docker.end_ns

    # ... handled by the allocator as its child, whose append the relay carries on.
    handled = one(named("potluck-allocator", "CONSUMER", f"handle {report_subject}"), "allocator report span")
    assert handled.parent_span_id == published.span_id
    relay_running = one(named(relays, "PRODUCER", "relay AllocationRunning"), "relay of AllocationRunning")
    assert relay_running.parent_span_id == handled.span_id
    assert {s.parent_span_id for s in appends} == {server.span_id, handled.span_id}

    services = {s.service for s in collector.trace(trace_id)}
    assert {"potluck-allocator", "potluck-hostd"} <= services
    assert not collector.rejected

    # The operator finds the trace from the allocation id.
    code, out, err = await _ops_trace(database_url, alloc_id)
    assert code == 0, err
    assert out.split() == [trace_id]


async def test_a_clients_traceparent_neither_grafts_nor_hides_its_request(
    traced_pool: Pool, collector: OtlpReceiver
) -> None:
    """Tried: a user's two requests carrying a `traceparent` of their own: one naming a trace id
    they chose (as if to graft onto another's trace), one marked unsampled (as if to stay out of
    the operators' traces).
    Must hold: each request has its own server span, a root in a trace the allocator started:
    none in the chosen trace id, none without a span."""
    await traced_pool.wait_api()
    token = await traced_pool.add_user("mallory")
    chosen = "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = {
        "grafted": f"00-{chosen}-00f067aa0ba902b7-01",
        "unsampled": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    }
    async with aiohttp.ClientSession() as http:
        for traceparent in sent.values():
            headers = {"Authorization": f"Bearer {token}", "traceparent": traceparent}
            async with http.get(traced_pool.api + "/v1/pool", headers=headers) as response:
                assert response.status == 200

    def served() -> list[CollectedSpan] | None:
        found = collector.find(
            lambda s: s.service == "potluck-allocator" and s.kind == "SERVER" and s.name == "GET /v1/pool"
        )
        return found if len(found) >= 2 else None

    spans = await collector.wait_for("both GET /v1/pool server spans", served)
    assert len(spans) == 2, [str(s) for s in spans]
    sent_trace_ids = {value.split("-")[1] for value in sent.values()}
    for span in spans:
        assert span.parent_span_id is None, str(span)
        assert span.trace_id not in sent_trace_ids, str(span)
    assert spans[0].trace_id != spans[1].trace_id


async def test_a_container_started_from_hostds_snapshot_stays_in_its_requests_trace(
    tmp_path: Path,
    database_url: str,
    docker_engines: list[DockerEngine],
    collector: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What is tried: the allocation is placed while its host's hostd is down (SIGKILL; liveness slow
    enough that the host stays schedulable), so hostd never handles its AllocationPlaced live: the
    restarted hostd starts the container from its desired-state snapshot. What must hold: the
    allocation runs, and hostd's Docker create+start for it is a span of the user's request's
    trace, under the request (the snapshot carried the placement's trace context)."""
    async with _pool_with(
        tmp_path,
        database_url,
        docker_engines,
        monkeypatch,
        liveness=(0.5, 120, 120.0),
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
    ) as pool:
        laptop = await _laptop(pool, docker_engines)
        assert laptop.process is not None
        laptop.process.kill()
        alloc_id, token = await request_allocation(pool)
        await wait_for_state(pool, alloc_id, token, "placed")
        pool.start_hostd(laptop)
        await wait_for_state(pool, alloc_id, token, "running")

        [server] = await collector.wait_for(
            "allocator HTTP span for POST /v1/allocations",
            lambda: collector.find(lambda s: s.kind == "SERVER" and s.name == "POST /v1/allocations"),
        )

        def started_with_its_parent() -> list[tuple[CollectedSpan, CollectedSpan]]:
            by_id = {s.span_id: s for s in collector.trace(server.trace_id)}
            return [
                (s, by_id[s.parent_span_id])
                for s in by_id.values()
                if (s.service, s.name) == ("potluck-hostd", "docker create+start")
                and s.parent_span_id in by_id
            ]

        [(docker, parent)] = await collector.wait_for(
            "hostd's Docker create+start in the request's trace, and its parent", started_with_its_parent
        )
        assert docker.attributes["potluck.alloc_id"] == alloc_id
        # Started from the snapshot, not from a consumer span of the event: its parent is the
        # allocator's span that logged the placement.
        assert parent.service == "potluck-allocator", str(parent)


async def _ops_trace(database_url: str, *args: str) -> tuple[int, str, str]:
    return await ops("trace", *args, "--database-url", database_url)


async def test_a_pool_keeping_spans_in_a_local_file_shows_the_trace_as_a_tree(
    tmp_path: Path, database_url: str, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's processes append their spans to one local file (POTLUCK_TRACES_FILE, as `potluck
    up` sets it), no collector anywhere; after an allocation runs, `potluck ops trace ALLOC` prints
    its trace as one tree: the HTTP request at the top, the log append and the relay's publish under
    it, and hostd's Docker create+start deeper, in another process's service."""
    spans_file = tmp_path / "traces.jsonl"
    async with _pool_with(
        tmp_path / "pool", database_url, docker_engines, monkeypatch, POTLUCK_TRACES_FILE=str(spans_file)
    ) as pool:
        await _laptop(pool, docker_engines)
        alloc_id = await allocate(pool)

        wanted = ("events append", "relay AllocationPlaced", "docker create+start", "relay AllocationRunning")

        def whole(out: str) -> bool:
            """Every wanted span is there, and one root: no span waits for its parent to be exported."""
            tree = out.splitlines()[1:]
            return all(name in out for name in wanted) and all(t.startswith(" ") for t in tree[1:])

        deadline = asyncio.get_running_loop().time() + 60
        while True:
            code, out, err = await _ops_trace(database_url, alloc_id, "--spans-file", str(spans_file))
            assert code == 0, err
            if whole(out) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)

    assert whole(out), f"the trace never showed whole\n{out}\n{err}"
    trace_id, *tree = out.splitlines()
    assert len(trace_id) == 32, out

    def line(services: tuple[str, ...], name: str) -> int:
        """The indentation of the first span of one of `services` whose name starts with `name`."""
        for text in tree:
            service, rest = text.split(None, 1)
            if service in services and rest.lstrip().startswith(name):
                return len(text) - len(text.lstrip())
        raise AssertionError(f"no {services} span {name!r} in\n{out}")

    allocator, relays = ("potluck-allocator",), ("potluck-allocator", "potluck-registry")
    assert tree[0].startswith("potluck-allocator  POST /v1/allocations  "), out
    assert tree[0].endswith(" ms")
    assert line(allocator, "events append") == 2
    assert line(relays, "relay AllocationPlaced") == 2
    # Under hostd's consumer span, itself under the relay's publish or the request.
    assert line(("potluck-hostd",), "docker create+start") >= 4

    code, out, err = await _ops_trace(database_url, alloc_id, "--spans-file", str(spans_file), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["trace_id"] == trace_id
    rows = shown["spans"]
    assert rows[0]["name"] == "POST /v1/allocations"
    assert (rows[0]["depth"], rows[0]["offset"]) == (0, 0.0)
    assert all(0.0 <= r["offset"] <= 1.0 and 0.0 <= r["width"] <= 1.0 for r in rows)
    assert {"potluck-allocator", "potluck-hostd"} <= {r["service"] for r in rows}


async def test_a_log_line_names_the_trace_it_was_written_in(
    tmp_path: Path, database_url: str, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: an allocation requested over HTTP on a pool keeping its spans in a local file, then
    the allocator's and hostd's JSON log lines about it read back.
    Must hold: the allocator's `allocation.requested` line and hostd's `hostd.container_started`
    line carry the `trace_id` that `potluck ops trace ALLOC` prints (and a `span_id`), so an
    operator goes from a log line to its trace; a line logged outside any request
    (`allocator.listening`) carries none."""
    spans_file = tmp_path / "traces.jsonl"
    async with _pool_with(
        tmp_path / "pool", database_url, docker_engines, monkeypatch, POTLUCK_TRACES_FILE=str(spans_file)
    ) as pool:
        host = await _laptop(pool, docker_engines)
        alloc_id = await allocate(pool)
        code, out, err = await _ops_trace(database_url, alloc_id, "--spans-file", str(spans_file))
        assert code == 0, err
        allocator = json_log(pool.workdir / "allocator.log")
        hostd = json_log(pool.workdir / f"hostd-{host.name}.log")
    trace_id = out.splitlines()[0]
    [requested] = [
        e for e in allocator if e["event"] == "allocation.requested" and e.get("alloc_id") == alloc_id
    ]
    [started] = [
        e for e in hostd if e["event"] == "hostd.container_started" and e.get("alloc_id") == alloc_id
    ]
    assert (requested.get("trace_id"), started.get("trace_id")) == (trace_id, trace_id), (requested, started)
    assert len(str(requested["span_id"])) == 16
    [listening] = [e for e in allocator if e["event"] == "allocator.listening"]
    assert "trace_id" not in listening


async def test_pool_metrics_reach_the_collector(
    traced_pool: Pool, traced_laptop: EnrolledHost, collector: OtlpReceiver
) -> None:
    host_id = traced_laptop.host_id
    await allocate(traced_pool)

    def latest(name: str, **attrs: str) -> float | None:
        points = [
            p for p in collector.metric(name) if all(p.attributes.get(k) == v for k, v in attrs.items())
        ]
        return points[-1].value if points else None

    await collector.wait_for(
        "capacity gauges showing the reservation",
        lambda: latest("potluck.capacity.cpus", host_id=host_id, kind="reserved") == 0.5,
    )
    assert latest("potluck.capacity.cpus", host_id=host_id, kind="donated") == 2.0
    assert latest("potluck.capacity.cpus", host_id=host_id, kind="free") == 1.5
    assert latest("potluck.capacity.memory", host_id=host_id, kind="reserved") == 64 << 20
    await collector.wait_for(
        "allocations by state", lambda: latest("potluck.allocations", state="running") == 1.0
    )
    await collector.wait_for(
        "heartbeats missed per host",
        lambda: latest("potluck.host.heartbeats_missed", host_id=host_id) is not None,
    )
    await collector.wait_for("relay lag", lambda: collector.metric("potluck.relay.lag"))
    lags = [p.value for p in collector.metric("potluck.relay.lag")]
    assert all(lag is not None and lag >= 0 for lag in lags)
    placement = await collector.wait_for(
        "the placement latency histogram", lambda: collector.metric("potluck.placement.latency")
    )
    assert placement[-1].count is not None
    assert placement[-1].count >= 1
    assert {p.service for p in collector.metric("potluck.allocations")} == {"potluck-allocator"}


# --- in this process: the environment's choices --------------------------------------------------


def test_the_environment_chooses_where_spans_and_metrics_go(tmp_path: Path) -> None:
    nothing = plan_telemetry("potluck-registry", {})
    assert (nothing.service_name, nothing.traces, nothing.metrics) == (
        "potluck-registry",
        SignalPlan("off"),
        SignalPlan("off"),
    )
    otlp = plan_telemetry("potluck-registry", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert otlp.traces == SignalPlan("otlp", "http://collector:4318/v1/traces")
    assert otlp.metrics == SignalPlan("otlp", "http://collector:4318/v1/metrics")
    own = plan_telemetry(
        "x",
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "named",
        },
    )
    assert (own.service_name, own.traces.target, own.metrics) == (
        "named",
        "http://t:4318/v1/traces",
        SignalPlan("off"),
    )
    explicit = plan_telemetry("x", {"OTEL_TRACES_EXPORTER": "otlp"})
    assert explicit.traces == SignalPlan("otlp", f"{DEFAULT_OTLP_ENDPOINT}/v1/traces")
    files = plan_telemetry(
        "x",
        {"POTLUCK_TRACES_FILE": str(tmp_path / "t.jsonl"), "POTLUCK_METRICS_FILE": str(tmp_path / "m.jsonl")},
    )
    assert files.traces == SignalPlan("file", str(tmp_path / "t.jsonl"))
    assert files.metrics == SignalPlan("file", str(tmp_path / "m.jsonl"))
    disabled = plan_telemetry(
        "x", {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    )
    assert not disabled.traces.on
    assert not disabled.metrics.on
    resource_name = plan_telemetry("x", {"OTEL_RESOURCE_ATTRIBUTES": "a=b,service.name=from-resource"})
    assert resource_name.service_name == "from-resource"

    for environ, variable in (
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"POTLUCK_TRACES_FILE": "/no/such/dir/t.jsonl"}, "POTLUCK_TRACES_FILE"),
    ):
        with pytest.raises(TelemetryConfigError, match=variable):
            plan_telemetry("x", environ)


async def test_spans_go_to_a_real_otlp_receiver_and_to_a_local_file(
    collector: OtlpReceiver, tmp_path: Path
) -> None:
    telemetry = build_telemetry("potluck-test", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
    assert telemetry.tracer_provider is not None
    tracer = telemetry.tracer_provider.get_tracer("test")
    with (
        tracer.start_as_current_span("outer") as outer,
        tracer.start_as_current_span("inner", kind=SpanKind.CLIENT),
    ):
        pass
    await asyncio.to_thread(telemetry.shutdown)
    spans = await collector.wait_for(
        "two spans", lambda: collector.spans if len(collector.spans) >= 2 else None
    )
    by_name = {s.name: s for s in spans}
    assert (
        by_name["inner"].parent_span_id
        == by_name["outer"].span_id
        == format(outer.get_span_context().span_id, "016x")
    )
    assert by_name["outer"].resource["service.name"] == "potluck-test"
    assert by_name["outer"].resource["service.namespace"] == "potluck"

    path = tmp_path / "spans.jsonl"
    to_file = build_telemetry("potluck-test", environ={"POTLUCK_TRACES_FILE": str(path)})
    assert to_file.tracer_provider is not None
    file_tracer = to_file.tracer_provider.get_tracer("test")
    for i in range(3):
        with file_tracer.start_as_current_span(f"span-{i}"):
            pass
    to_file.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["span-0", "span-1", "span-2"]
    assert {line["resource"]["attributes"]["service.name"] for line in lines} == {"potluck-test"}


async def test_a_query_outside_any_trace_starts_none_but_one_inside_is_kept(
    collector: OtlpReceiver, database_url: str
) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    telemetry = build_telemetry("potluck-test", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
    assert telemetry.tracer_provider is not None
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.fetchval("SELECT 1 AS orphan")
            with telemetry.tracer_provider.get_tracer("test").start_as_current_span("request"):
                await conn.fetchval("SELECT 2 AS traced")
        finally:
            await conn.close()
    finally:
        instrumentor.uninstrument()
        await asyncio.to_thread(telemetry.shutdown)
    spans = await collector.wait_for(
        "the request span", lambda: collector.find(lambda s: s.name == "request")
    )
    request = one(spans, "request span")
    queries = collector.find(lambda s: s.kind == "CLIENT")
    statements = [str(q.attributes.get("db.statement", q.attributes.get("db.query.text"))) for q in queries]
    assert statements == ["SELECT 2 AS traced"]
    assert queries[0].parent_span_id == request.span_id


def test_processes_fail_at_start_on_a_bad_setting(tmp_path: Path) -> None:
    """`potluck.telemetry` is what every process calls first; a bad value names its variable."""
    import subprocess

    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from potluck.telemetry import configure_telemetry; configure_telemetry('x')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in done.stderr


async def test_a_jobs_task_has_a_trace_that_ops_trace_prints(
    tmp_path: Path, database_url: str, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: on a pool keeping spans in a local file (as `potluck up` does), a job of one task is
    submitted over HTTP (`POST /v1/jobs`), and `potluck ops trace` is asked for the task's
    allocation, which the allocator requested itself. Must hold: it exits 0 and prints the task's
    trace as one tree whose root is the job's `POST /v1/jobs`, with the allocator's `job step`
    under it; it once said "tracing was off in the allocator then" although tracing was on."""
    spans_file = tmp_path / "traces.jsonl"
    async with _pool_with(
        tmp_path / "pool", database_url, docker_engines, monkeypatch, POTLUCK_TRACES_FILE=str(spans_file)
    ) as pool:
        await _laptop(pool, docker_engines)
        await pool.wait_api()
        token = await pool.add_user("alice")
        headers = {"Authorization": f"Bearer {token}"}
        body = {
            "tasks": 1,
            "cpus": 0.5,
            "memory": "64M",
            "disk": "64M",
            "image": DEFAULT_TAG,
            "command": ["true"],
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(pool.api + "/v1/jobs", json=body, headers=headers) as response:
                job = await response.json()
                assert response.status == 201, job
            async with http.get(
                f"{pool.api}/v1/jobs/{job['id']}?wait=done&timeout=60", headers=headers
            ) as response:
                shown = await response.json()
                assert response.status == 200, shown
        [task] = shown["task_list"]
        alloc_id = task["alloc_id"]

        deadline = asyncio.get_running_loop().time() + 60
        while True:
            code, out, err = await _ops_trace(database_url, alloc_id, "--spans-file", str(spans_file))
            if (code == 0 and "job step" in out) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)

    assert code == 0, f"{out}\n{err}"
    trace_id, *tree = out.splitlines()
    assert len(trace_id) == 32, out
    assert tree[0].startswith("potluck-allocator  POST /v1/jobs  "), out
    assert any(line.lstrip().startswith("potluck-allocator  job step  ") for line in tree[1:]), out


async def test_a_request_that_waited_in_the_queue_stays_in_its_trace_to_its_start(
    traced_pool: Pool, traced_laptop: EnrolledHost, collector: OtlpReceiver, database_url: str
) -> None:
    """Tried: the laptop is taken whole by one allocation, a second is requested (202: it waits),
    then the first is released and the queue places the second. Before the fix the placement was
    appended outside any trace: the waiting request's trace ended at its POST, its placement had
    no trace and hostd started its container in a trace of its own, so `potluck ops trace` of
    the allocation showed no placement and no start.
    What must hold: the trace of the waiting request's POST holds the allocator's `queued
    placement` span and, below it, hostd's `docker create+start` of that allocation; `ops
    trace` names that trace."""
    await traced_pool.wait_api()
    token = await traced_pool.add_user("alice")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "3600"]}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(traced_pool.api + "/v1/pool") as response:
            free = (await response.json())["total"]["free"]["cpus"]
        async with http.post(traced_pool.api + "/v1/allocations", json={**body, "cpus": free}) as response:
            whole = await response.json()
            assert response.status == 201, whole
        async with http.post(traced_pool.api + "/v1/allocations", json={**body, "cpus": 0.5}) as response:
            waiting = await response.json()
            assert response.status == 202, waiting
        async with http.delete(f"{traced_pool.api}/v1/allocations/{whole['id']}") as response:
            assert response.status == 200, await response.text()
    await wait_for_state(traced_pool, waiting["id"], token, "running")

    def posts() -> list[CollectedSpan]:
        found = collector.find(
            lambda s: (
                s.service == "potluck-allocator" and s.kind == "SERVER" and s.name == "POST /v1/allocations"
            )
        )
        return sorted(found, key=lambda s: s.start_ns) if len(found) == 2 else []

    trace_id = (await collector.wait_for("the allocator's two POST spans", posts))[1].trace_id

    def started_in_it() -> list[CollectedSpan]:
        return [
            s
            for s in collector.trace(trace_id)
            if s.name.startswith("docker create+start")
            and s.attributes.get("potluck.alloc_id") == waiting["id"]
        ]

    await collector.wait_for("hostd's start of the waiting allocation in its request's trace", started_in_it)
    queued = [s for s in collector.trace(trace_id) if s.name == "queued placement"]
    assert one(queued, "queued placement").attributes["potluck.alloc_id"] == waiting["id"]
    code, out, err = await _ops_trace(database_url, waiting["id"])
    assert code == 0, err
    assert out.split() == [trace_id]
