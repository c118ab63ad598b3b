"""One trace per SSH session: the gateway's span, and hostd's exec span under it, across processes.

The gateway and host 0's link (tests/fixtures/ssh.py) are restarted with the
standard OTEL_* variables pointing at a real OTLP/HTTP receiver on loopback
(tests/fixtures/otlp.py); the real `ssh` client runs a command that exits 3.
The spans that arrive must form one trace: the gateway's `ssh session` root
(with the session's facts and its exit status), its audit appends, and in the
link's process the `exec session` span as its child, with the Docker exec
calls under that. The trace context travels in the session's TRACEPARENT
variable and must not reach the container.

Refused sessions get an error status; failed logins make no span at all.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from potluck.events.tracing import trace_carrier_of
from potluck.kernel.trace_spans import parse_traceparent
from potluck.sshgateway.events import session_stream
from tests.fixtures.otlp import CollectedSpan, OtlpReceiver
from tests.fixtures.ssh import SshEnv

#: OTLP's status codes (opentelemetry.proto.trace.v1.Status.StatusCode).
STATUS_UNSET, STATUS_ERROR = 0, 2


@pytest.fixture(scope="module")
async def collector() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def otel_env(collector: OtlpReceiver, service: str) -> dict[str, str]:
    # Every variable that decides where spans go is set here, so that whatever the
    # test runner's own environment holds (it is passed on) cannot send them elsewhere.
    return {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


@pytest.fixture(scope="module")
async def traced(ssh_env: SshEnv, collector: OtlpReceiver) -> SshEnv:
    """The module's gateway and host 0's link, started again with OTEL_* pointing at `collector`."""
    host = ssh_env.hosts[0]
    if host.link is not None:
        host.link.stop(timeout=10)
    await ssh_env.restart_gateway(otel_env(collector, "potluck-sshgateway"))
    ssh_env.start_link(host, otel_env(collector, "potluck-hostd"))
    return ssh_env


def statement(span: CollectedSpan) -> str:
    """A database span's SQL (the attribute's name depends on the semantic conventions' version)."""
    return str(span.attributes.get("db.statement", span.attributes.get("db.query.text", "")))


def one(spans: list[CollectedSpan], what: str) -> CollectedSpan:
    assert len(spans) == 1, f"expected one {what}, got {[str(s) for s in spans]}"
    return spans[0]


async def session_end(env: SshEnv, alloc_id: str, **match: object) -> dict[str, Any]:
    """The one SessionEnded of `alloc_id` with these fields, once the gateway has logged it."""
    deadline = time.monotonic() + 10
    while True:
        ends = [
            e
            for e in await env.session_events(alloc_id)
            if e["type"] == "SessionEnded" and all(e.get(k) == v for k, v in match.items())
        ]
        if ends or time.monotonic() > deadline:
            return one_event(ends, f"SessionEnded of {alloc_id} with {match}")
        await asyncio.sleep(0.1)


def one_event(events: list[dict[str, Any]], what: str) -> dict[str, Any]:
    assert len(events) == 1, f"expected one {what}, got {events}"
    return events[0]


async def test_one_trace_covers_an_ssh_session_from_the_gateway_to_the_docker_exec(
    traced: SshEnv, collector: OtlpReceiver
) -> None:
    env = traced
    host = env.hosts[0]
    container_id = await env.place_running(host, "trace1")
    await env.wait_reachable("trace1")

    result = await env.ssh("trace1", 'echo "${TRACEPARENT:-none} ${TRACESTATE:-none}"; exit 3')
    assert result.returncode == 3, (result, env.logs())
    # The context is hostd's business, not the user's: it never reaches the container.
    assert result.out == "none none\n"

    ended = await session_end(env, "trace1", exit_status=3)
    session_id = str(ended["session_id"])
    root = one(
        await collector.wait_for(
            f"the gateway's span of session {session_id}",
            lambda: collector.find(
                lambda s: s.name == "ssh session" and s.attributes.get("potluck.session_id") == session_id
            ),
        ),
        "gateway session span",
    )
    trace_id = root.trace_id

    def named(service: str, name: str) -> list[CollectedSpan]:
        return [s for s in collector.trace(trace_id) if s.service == service and s.name == name]

    def complete() -> bool:
        spans = collector.trace(trace_id)
        ids = {s.span_id for s in spans}
        appends = [
            s for s in named("potluck-sshgateway", "events append") if s.parent_span_id == root.span_id
        ]
        return (
            bool(named("potluck-hostd", "docker exec inspect"))
            and len(appends) == 2  # SessionStarted, then SessionEnded
            # below an append, its COPY into the log (in a transaction maybe shared with others)
            and any("COPY events" in statement(s) for s in spans)
            and all(s.parent_span_id is None or s.parent_span_id in ids for s in spans)
        )

    await collector.wait_for(f"the whole trace {trace_id}", complete)

    # The gateway's root: who, from where, through which gateway; how much, and how it ended.
    started = one_event(
        [
            e
            for e in await env.session_events("trace1")
            if e["type"] == "SessionStarted" and e["session_id"] == session_id
        ],
        "SessionStarted",
    )
    assert root.service == "potluck-sshgateway"
    assert (root.kind, root.parent_span_id, root.status_code) == ("SERVER", None, STATUS_UNSET)
    attrs = root.attributes
    assert attrs["potluck.alloc_id"] == "trace1"
    assert attrs["potluck.host_id"] == host.host_id
    assert attrs["potluck.gateway"] == started["gateway"]
    assert attrs["potluck.ssh.key_fingerprint"] == started["key_fingerprint"]
    assert attrs["potluck.ssh.key_fingerprint"].startswith("SHA256:")
    assert attrs["network.peer.address"] == "127.0.0.1"
    assert attrs["network.peer.port"] == started["source_port"]
    assert attrs["potluck.session.kind"] == "exec"
    assert attrs["potluck.session.end_reason"] == "EXITED"
    assert attrs["process.exit.code"] == 3
    assert attrs["potluck.session.bytes_out"] == ended["bytes_out"] == len(result.stdout)
    assert attrs["potluck.session.bytes_in"] == ended["bytes_in"] == 0

    # hostd, another process, serves the session as the root's child ...
    exec_span = one(named("potluck-hostd", "exec session"), "hostd exec session span")
    assert exec_span.kind == "SERVER"
    assert exec_span.parent_span_id == root.span_id
    assert exec_span.resource["potluck.host_id"] == host.host_id
    assert exec_span.attributes["potluck.session_id"] == session_id
    assert exec_span.attributes["container.id"] == container_id
    assert exec_span.attributes["process.exit.code"] == 3
    assert exec_span.status_code == STATUS_UNSET
    assert root.start_ns <= exec_span.start_ns

    # ... with the Docker exec calls under it.
    create = one(named("potluck-hostd", "docker exec create+start"), "exec create+start span")
    inspect = one(named("potluck-hostd", "docker exec inspect"), "exec inspect span")
    for span in (create, inspect):
        assert span.kind == "CLIENT"
        assert span.parent_span_id == exec_span.span_id
        assert span.attributes["container.id"] == container_id
        assert span.attributes["potluck.alloc_id"] == "trace1"
    assert inspect.attributes["process.exit.code"] == 3
    assert create.end_ns <= inspect.start_ns
    assert not named("potluck-hostd", "docker exec terminate"), "the command ended by itself"

    # The audit events are in the trace too, and their metadata names it.
    records = await env.store.read_stream(session_stream(session_id))
    assert [r.type for r in records] == ["SessionStarted", "SessionEnded"]
    for record in records:
        parsed = parse_traceparent(trace_carrier_of(record.metadata).get("traceparent", ""))
        assert parsed is not None, record
        assert parsed[0] == trace_id

    assert {s.service for s in collector.trace(trace_id)} == {"potluck-sshgateway", "potluck-hostd"}
    assert not collector.rejected


async def test_a_session_cut_short_terminates_its_process_inside_the_trace(
    traced: SshEnv, collector: OtlpReceiver
) -> None:
    env = traced
    host = env.hosts[0]
    await env.place_running(host, "trace2")
    await env.wait_reachable("trace2")
    # The user's client goes away while the command runs: hostd ends the process.
    client = await asyncio.create_subprocess_exec(
        *env.ssh_argv("trace2", "sleep 1301"), stdout=asyncio.subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while "sleep 1301" not in await env.in_container(host, "trace2", "ps -o args"):
        assert time.monotonic() < deadline, f"the command never started\n{env.logs()}"
        await asyncio.sleep(0.05)
    client.kill()
    await client.wait()
    ended = await session_end(env, "trace2", reason="CLIENT_DISCONNECTED")
    session_id = str(ended["session_id"])
    terminate = one(
        await collector.wait_for(
            "hostd's docker exec terminate span",
            lambda: [
                s
                for s in collector.find(lambda s: s.name == "docker exec terminate")
                if any(
                    p.span_id == s.parent_span_id and p.attributes.get("potluck.session_id") == session_id
                    for p in collector.trace(s.trace_id)
                )
            ],
        ),
        "terminate span",
    )
    trace_spans = collector.trace(terminate.trace_id)
    root = one([s for s in trace_spans if s.name == "ssh session"], "gateway session span")
    exec_span = one([s for s in trace_spans if s.name == "exec session"], "hostd exec session span")
    assert root.attributes["potluck.session.end_reason"] == "CLIENT_DISCONNECTED"
    assert root.status_code == STATUS_UNSET
    assert exec_span.parent_span_id == root.span_id
    assert exec_span.attributes["potluck.session.terminated"] is True
    assert terminate.parent_span_id == exec_span.span_id
    assert exec_span.end_ns >= terminate.end_ns, "hostd's span lasts until the process is ended"
    assert terminate.attributes["potluck.exec.processes_signalled"] >= 1


async def test_refusals_are_errors_and_failed_logins_make_no_spans(
    traced: SshEnv, collector: OtlpReceiver
) -> None:
    env = traced
    await env.place_running(env.hosts[0], "trace3")
    await env.wait_reachable("trace3")
    await env.place_running(env.hosts[0], "trace4", start=False)  # placed, never running

    refused = await env.ssh("trace4", "true", source="127.0.0.41")
    assert refused.returncode == 255
    assert "not running yet" in refused.err
    for _ in range(3):
        wrong_key = await env.ssh("trace3", "true", key="mallory", source="127.0.0.42")
        assert wrong_key.returncode == 255
        assert "Permission denied (publickey)" in wrong_key.err
    # A session after them all: once its span is here, any span of theirs would be too
    # (each process exports its spans in the order they ended).
    assert (await env.ssh("trace3", "true", source="127.0.0.43")).returncode == 0
    await collector.wait_for(
        "the span of the last session",
        lambda: collector.find(
            lambda s: s.name == "ssh session" and s.attributes.get("network.peer.address") == "127.0.0.43"
        ),
    )

    error = one(
        collector.find(
            lambda s: s.name == "ssh session" and s.attributes.get("network.peer.address") == "127.0.0.41"
        ),
        "refused session span",
    )
    assert error.status_code == STATUS_ERROR
    assert error.attributes["potluck.session.end_reason"] == "ALLOCATION_NOT_RUNNING"
    assert not [s for s in collector.trace(error.trace_id) if s.service == "potluck-hostd"]

    # Failed logins: no span of any kind names their address, and the gateway's only roots
    # are the sessions the log recorded.
    assert not collector.find(lambda s: "127.0.0.42" in map(str, s.attributes.values()))
    gateway_spans = [s for s in collector.spans if s.service == "potluck-sshgateway"]
    roots = [s for s in gateway_spans if s.parent_span_id is None]
    assert {s.name for s in roots} == {"ssh session"}
    started = [e for e in await env.session_events() if e["type"] == "SessionStarted"]
    assert len(roots) == len(started)
