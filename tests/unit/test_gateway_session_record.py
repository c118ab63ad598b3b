"""What a session asks of the host and what the audit makes of it: pure parts of a session.

`host_env` is the one place that decides which of the user's variables
reach the host: only the locale, never our markers or a trace context the
user made up. `SessionRecord` makes the two audit events from the request,
the login and the bytes the bridge counted.
"""

import json
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.events.schema import encode, registry
from potluck.sshgateway.audit import MAX_DETAIL, LoginIdentity, SessionRecord
from potluck.sshgateway.events import MAX_COMMAND, SessionStarted
from potluck.sshgateway.request import SessionRequest, host_env

LOGIN = LoginIdentity(
    alloc_id="a1", key_fingerprint="SHA256:abc", source_address="192.0.2.7", source_port=50022
)
TRACE = {"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_only_the_users_locale_reaches_the_host_next_to_our_markers_and_trace() -> None:
    sent = {
        "LANG": "fr_FR.UTF-8",
        "LC_ALL": "C.UTF-8",
        "LC_TIME": "en_GB.UTF-8",
        "PATH": "/evil",
        "LD_PRELOAD": "/tmp/x.so",
        "POTLUCK_ALLOC": "someone-elses",
        "POTLUCK_SESSION": "forged",
        "TRACEPARENT": "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01",
    }
    env = host_env(sent, alloc_id="a1", session_id="s1", trace_env=TRACE)
    assert env == {
        "LANG": "fr_FR.UTF-8",
        "LC_ALL": "C.UTF-8",
        "LC_TIME": "en_GB.UTF-8",
        "POTLUCK_ALLOC": "a1",
        "POTLUCK_SESSION": "s1",
        **TRACE,
    }


def test_without_tracing_no_trace_context_is_sent() -> None:
    env = host_env({"TRACEPARENT": "00-forged"}, alloc_id="a1", session_id="s1", trace_env={})
    assert env == {"POTLUCK_ALLOC": "a1", "POTLUCK_SESSION": "s1"}


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=8))
def test_the_users_variables_never_override_ours(sent: dict[str, str]) -> None:
    env = host_env(sent, alloc_id="a1", session_id="s1", trace_env=TRACE)
    assert (env["POTLUCK_ALLOC"], env["POTLUCK_SESSION"]) == ("a1", "s1")
    assert env["TRACEPARENT"] == TRACE["TRACEPARENT"]
    assert all(
        k in ("POTLUCK_ALLOC", "POTLUCK_SESSION", "TRACEPARENT") or k == "LANG" or str(k).startswith("LC_")
        for k in env
    )


def test_a_shell_with_a_terminal_is_recorded_as_such() -> None:
    request = SessionRequest(term_type="xterm-256color", term_size=(80, 24, 0, 0))
    started = SessionRecord("s1", LOGIN, "gw1").started(request, user="ann", host_id="h1")
    assert (started.kind, started.command, started.pty, started.term_type) == (
        "shell",
        None,
        True,
        "xterm-256color",
    )
    assert (started.session_id, started.alloc_id, started.user, started.host_id, started.gateway) == (
        "s1",
        "a1",
        "ann",
        "h1",
        "gw1",
    )
    assert (started.key_fingerprint, started.source_address, started.source_port) == (
        "SHA256:abc",
        "192.0.2.7",
        50022,
    )


def test_a_command_is_recorded_up_to_its_limit_and_a_subsystem_by_its_name() -> None:
    record = SessionRecord("s1", LOGIN, "gw1")
    long = SessionRequest(kind="exec", command="x" * (MAX_COMMAND + 10))
    assert record.started(long, user="ann", host_id="h1").command == "x" * MAX_COMMAND
    sftp = SessionRequest(kind="subsystem", subsystem="sftp")
    started = record.started(sftp, user="ann", host_id=None)
    assert (started.command, started.pty, started.host_id) == ("sftp", False, None)
    assert record.started(SessionRequest(kind="exec", command=""), user="", host_id=None).command is None


def test_the_end_carries_the_counted_bytes_and_a_bounded_detail() -> None:
    record = SessionRecord("s1", LOGIN, "gw1")
    record.counts.bytes_in += 5
    record.counts.bytes_out += 1 << 20
    ended = record.ended("HOST_DISCONNECTED", "d" * (MAX_DETAIL + 1))
    assert (ended.reason, ended.bytes_in, ended.bytes_out) == ("HOST_DISCONNECTED", 5, 1 << 20)
    assert ended.detail == "d" * MAX_DETAIL
    assert ended.started_at == record.started_at
    assert timedelta(0) <= ended.ended_at - ended.started_at < timedelta(seconds=5)
    exited = record.ended("EXITED", "", exit_status=3)
    assert (exited.exit_status, exited.exit_signal) == (3, None)


def test_the_start_names_the_gateways_run_and_a_start_recorded_before_runs_still_reads() -> None:
    started = SessionRecord("s1", LOGIN, "gw1", "run-1").started(SessionRequest(), user="ann", host_id="h1")
    assert started.gateway_run == "run-1"
    without_bus = SessionRecord("s1", LOGIN, "gw1").started(SessionRequest(), user="", host_id=None)
    assert without_bus.gateway_run is None
    older = json.loads(encode(started))
    del older["gateway_run"]
    decoded = registry.decode(SessionStarted.type_name, SessionStarted.schema_version, json.dumps(older))
    assert isinstance(decoded, SessionStarted)
    assert (decoded.session_id, decoded.gateway, decoded.gateway_run) == ("s1", "gw1", None)
