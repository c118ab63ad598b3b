"""The gateway's fold of the log: the shared `Fold` over its view, and what it does about changes.

Records are built as the store hands them out and fed through `Fold`, as
service.py does: an allocation that stops running ends its sessions (and
only its own), an event the gateway cannot read is skipped with the shared
policy (counted, logged as `events.skipped_unreadable`) and the fold goes
on, and other streams' records are not even decoded.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from uuid import uuid4

import pytest

from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    alloc_stream,
)
from potluck.contracts.host_events import host_stream
from potluck.events import Event, Fold, RecordedEvent, projection
from potluck.events.schema import encode
from potluck.sshgateway.audit import LoginIdentity
from potluck.sshgateway.context import SessionRegistry
from potluck.sshgateway.events import EndReason, SessionEnded, SessionStarted, session_stream
from potluck.sshgateway.gateway_runs import OpenSession
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.projection import GatewayView, key_blob
from potluck.sshgateway.reactions import GatewayReactions
from tests.helpers import capture_module_log
from tests.unit.test_gateway_projection import KEY_A, SPEC, T0, registered


@dataclass(eq=False)
class Session:
    """Stands for a GatewaySession in the registry: a login, and the ends it was asked for."""

    identity: LoginIdentity
    ends: list[tuple[EndReason, str]] = field(default_factory=list)
    reads_logs: bool = False
    session_id: str = field(default_factory=lambda: uuid4().hex)

    def end(self, reason: EndReason, message: str) -> None:
        self.ends.append((reason, message))


def session_on(alloc_id: str) -> Session:
    return Session(LoginIdentity(alloc_id, "SHA256:k", "192.0.2.1", 50000))


class Log:
    """Records at increasing positions, as the store reads them back."""

    def __init__(self) -> None:
        self.position = 0
        self.versions: dict[str, int] = {}

    def raw(self, stream: str, type_name: str, data_json: str, schema_version: int = 1) -> RecordedEvent:
        self.position += 1
        version = self.versions[stream] = self.versions.get(stream, 0) + 1
        at = T0 + timedelta(seconds=self.position)
        return RecordedEvent(
            self.position, uuid4(), stream, version, type_name, schema_version, data_json, {}, at
        )

    def __call__(self, stream: str, event: Event) -> RecordedEvent:
        return self.raw(stream, event.type_name, encode(event), event.schema_version)


def running(log: Log, alloc_id: str) -> list[RecordedEvent]:
    stream = alloc_stream(alloc_id)
    return [
        log(stream, AllocationRequested(alloc_id=alloc_id, user="ann", spec=SPEC, lifetime_s=3600)),
        log(
            stream,
            AllocationPlaced(
                alloc_id=alloc_id, host_id="h1", user="ann", spec=SPEC, expires_at=T0 + timedelta(hours=1)
            ),
        ),
        log(stream, AllocationRunning(alloc_id=alloc_id, host_id="h1", container_id="c1")),
    ]


def gateway_fold() -> tuple[Fold, GatewayView, SessionRegistry]:
    view, sessions = GatewayView(), SessionRegistry()
    return Fold(GatewayReactions(view, sessions, LinkPool()), reader="sshgateway"), view, sessions


def test_an_allocation_that_stops_running_ends_its_sessions_and_only_them() -> None:
    fold, view, sessions = gateway_fold()
    log = Log()
    fold.apply_all(running(log, "a1") + running(log, "a2"))
    mine, also_mine, other = session_on("a1"), session_on("a1"), session_on("a2")
    for session in (mine, also_mine, other):
        sessions.add(session)
    assert mine.ends == []
    assert other.ends == []

    fold.apply(log(alloc_stream("a1"), AllocationReleased(alloc_id="a1", host_id="h1", by="ann")))

    message = "allocation a1 is now released; the session ended"
    assert mine.ends == also_mine.ends == [("ALLOCATION_ENDED", message)]
    assert other.ends == []
    allocation = view.allocation("a1")
    assert allocation is not None
    assert allocation.status == "released"


def test_an_unreadable_event_is_skipped_counted_and_logged_and_the_fold_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fold, view, _ = gateway_fold()
    log = Log()
    records = running(log, "a1")
    newer_writer = log.raw(alloc_stream("a1"), "AllocationTeleported", '{"alloc_id": "a1"}')
    broken = log.raw(alloc_stream("a2"), "AllocationRequested", '{"alloc_id": "a2"}')
    after = log(host_stream("h1"), registered("h1", KEY_A))

    # Not structlog's capture_logs: it misses a logger cached by a test that ran before in the
    # same worker (the full suite failed so once).
    capture = capture_module_log(projection, monkeypatch)
    fold.apply_all([*records, newer_writer, broken, after])
    logs = capture.entries

    assert fold.skipped.count == 2
    assert [s.position for s in fold.skipped.recent] == [newer_writer.position, broken.position]
    skipped_logs = [e for e in logs if e["event"] == "events.skipped_unreadable"]
    assert [(e["reader"], e["type"]) for e in skipped_logs] == [
        ("sshgateway", "AllocationTeleported"),
        ("sshgateway", "AllocationRequested"),
    ]
    assert fold.position == after.position
    allocation = view.allocation("a1")
    assert allocation is not None
    assert allocation.status == "running"
    assert view.allocation("a2") is None
    blob = key_blob(KEY_A)
    assert blob is not None
    assert view.host_for_key(blob) == "h1"


def test_other_streams_are_not_decoded_but_the_position_follows_them() -> None:
    fold, _, _ = gateway_fold()
    log = Log()
    unknown_elsewhere = log.raw("thing-s1", "SomethingNobodyKnows", "not even json")
    fold.apply(unknown_elsewhere)
    assert fold.skipped.count == 0
    assert fold.position == unknown_elsewhere.position


def test_the_view_alone_is_a_projection_a_fold_can_feed() -> None:
    view = GatewayView()
    fold = Fold(view, reader="test")
    log = Log()
    fold.apply_all([*running(log, "a1"), log(host_stream("h1"), registered("h1", KEY_A))])
    blob = key_blob(KEY_A)
    assert blob is not None
    assert view.host_for_key(blob) == "h1"
    assert view.position == fold.position == log.position
    allocation = view.allocation("a1")
    assert allocation is not None
    assert allocation.status == "running"


def started(session_id: str, run: str | None) -> SessionStarted:
    return SessionStarted(
        session_id=session_id,
        alloc_id="a1",
        user="ann",
        host_id="h1",
        key_fingerprint="SHA256:k",
        source_address="192.0.2.1",
        source_port=50000,
        gateway="gw",
        gateway_run=run,
        kind="shell",
        started_at=T0,
    )


def ended(session_id: str, reason: EndReason) -> SessionEnded:
    return SessionEnded(
        session_id=session_id, alloc_id="a1", reason=reason, started_at=T0, ended_at=T0 + timedelta(1)
    )


def test_the_view_keeps_the_sessions_a_run_started_until_they_end() -> None:
    fold, view, _ = gateway_fold()
    log = Log()
    fold.apply_all(
        [
            log(session_stream("s1"), started("s1", "run-1")),
            log(session_stream("s2"), started("s2", "run-2")),
            log(session_stream("old"), started("old", None)),  # recorded before runs were
        ]
    )
    assert view.open_sessions == {
        "s1": OpenSession("s1", "a1", "gw", "run-1", T0),
        "s2": OpenSession("s2", "a1", "gw", "run-2", T0),
    }
    fold.apply_all(
        [log(session_stream("s1"), ended("s1", "EXITED")), log(session_stream("old"), ended("old", "EXITED"))]
    )
    assert list(view.open_sessions) == ["s2"]


def test_a_session_of_this_gateway_recorded_lost_elsewhere_ends_here_and_no_other() -> None:
    """A gateway cut off from the bus was taken for lost: its session's end is in the log, so the
    session ends here too (and, ending for GATEWAY_LOST, writes no second end)."""
    fold, _, sessions = gateway_fold()
    log = Log()
    fold.apply_all(running(log, "a1"))
    mine, other = session_on("a1"), session_on("a1")
    sessions.add(mine)
    sessions.add(other)
    fold.apply(log(session_stream(mine.session_id), ended(mine.session_id, "GATEWAY_LOST")))
    fold.apply(log(session_stream(other.session_id), ended(other.session_id, "EXITED")))
    assert [reason for reason, _ in mine.ends] == ["GATEWAY_LOST"]
    assert other.ends == []
