"""A host whose hostd runs but whose Docker engine stopped answering: the Host aggregate's
decision (host.engine_reported), the fold (HostEngineLost, HostEngineReturned), placement's
snapshot of the host, what its users are told, and the registry's reading of the report's
subject. Pure: no servers."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from potluck.allocator.capacity import snapshot_of
from potluck.allocator.scheduler import NO_SCHEDULABLE_HOST, Placed, PlacementRequest, Wait, place
from potluck.contracts.allocation_events import AllocationRunning, alloc_stream
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import (
    HostDeregistered,
    HostEngineLost,
    HostEngineReturned,
    HostSuspected,
    host_stream,
)
from potluck.contracts.reports import EngineStatus
from potluck.events import Event, PoisonMessage
from potluck.readmodels.hosts import HostState, HostsView, evolve, host_as_dict
from potluck.registry import host
from potluck.registry.engine_reports import engine_report_decoder
from potluck.user.cli import _state
from tests.unit.test_allocation_conditions import pool, shown, since_of
from tests.unit.test_allocator_model import folded
from tests.unit.test_host_policy import ENROLLED, REGISTERED

H = "h-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOST = HostEngineLost(host_id=H, detail="the Docker engine stopped answering")
RETURNED = HostEngineReturned(host_id=H)


def fold(*events: Event) -> HostState:
    """The events folded one a minute from T0."""
    state: HostState | None = None
    for n, event in enumerate(events):
        state = evolve(state, event, n + 1, T0 + timedelta(minutes=n))
    assert state is not None
    return state


def test_an_engine_that_stops_is_recorded_once_and_its_return_once() -> None:
    """Tried: hostd reports its engine away, away again, back, back again. Must hold: one
    HostEngineLost with hostd's words, nothing for the repeat, one HostEngineReturned, nothing
    for its repeat; a host not registered (enrolled only, deregistered) or unknown records
    nothing, whatever its hostd says."""
    registered = fold(ENROLLED, REGISTERED)
    assert host.engine_reported(registered, True) == []
    assert host.engine_reported(registered, False, "the Docker engine stopped answering") == [LOST]
    away = fold(ENROLLED, REGISTERED, LOST)
    assert host.engine_reported(away, False, "still gone") == []
    assert host.engine_reported(away, True) == [RETURNED]
    assert host.engine_reported(fold(ENROLLED, REGISTERED, LOST, RETURNED), True) == []
    assert host.engine_reported(None, False) == []
    assert host.engine_reported(fold(ENROLLED), False) == []
    assert (
        host.engine_reported(fold(ENROLLED, REGISTERED, HostDeregistered(host_id=H, by="member")), False)
        == []
    )


def test_a_long_detail_is_cut_to_what_the_event_takes() -> None:
    """Tried: a report whose detail is as long as a report may carry. Must hold: the event
    records its first 500 characters and validates."""
    (event,) = host.engine_reported(fold(ENROLLED, REGISTERED), False, "y" * 4096)
    assert isinstance(event, HostEngineLost)
    assert event.detail == "y" * 500


def test_the_fold_keeps_the_engine_away_since_it_went_and_the_host_unschedulable() -> None:
    """Tried: HostEngineLost, the same again later, then HostEngineReturned. Must hold: while
    away the host is online and active yet not schedulable, away since the first event (a repeat
    keeps it), and its row says so with what it means; once back it is schedulable again and
    its row says nothing of the engine."""
    away = fold(ENROLLED, REGISTERED, LOST, LOST)
    assert (away.status, away.liveness) == ("active", "online")
    assert away.engine_away
    assert not away.schedulable
    assert away.engine_away_since == T0 + timedelta(minutes=2)
    said: Any = host_as_dict(away)["engine_away"]
    assert said == {
        "since": (T0 + timedelta(minutes=2)).isoformat(),
        "detail": "the Docker engine stopped answering",
        "means": said["means"],
    }
    assert "nothing new is placed here" in said["means"]
    back = fold(ENROLLED, REGISTERED, LOST, RETURNED)
    assert back.schedulable
    assert not back.engine_away
    assert back.engine_away_since is None
    assert host_as_dict(back)["engine_away"] is None


def test_a_rebuild_folds_to_the_same_host_as_the_view_that_followed() -> None:
    """Tried: the same events applied one by one to a view, and rebuilt from the log at once.
    Must hold: both views hold the same host (replay agrees with the running registry)."""
    events = [ENROLLED, REGISTERED, LOST, HostSuspected(host_id=H, silent_for_s=9), RETURNED]
    live = HostsView()
    for n, event in enumerate(events, start=1):
        live.apply(event, position=n, version=n, at=T0)
    rebuilt = HostsView.rebuild((e, n, n, T0) for n, e in enumerate(events, start=1))
    assert live.hosts == rebuilt.hosts


def test_placement_sees_an_engine_away_as_unschedulable_and_waits_saying_so() -> None:
    """Tried: a request constrained to a host whose engine is away, then the same once it
    returned. Must hold: the snapshot is not schedulable, the request waits (NO_SCHEDULABLE_HOST)
    with a message naming the Docker engine; once back it is placed there."""
    request = PlacementRequest(
        alloc_id="a1", resources=Capacity(cpus=1, memory_bytes=1 << 20, disk_bytes=1 << 20)
    )
    away = snapshot_of(fold(ENROLLED, REGISTERED, LOST))
    assert away is not None
    assert not away.schedulable
    decision = place([away], request)
    assert decision == Wait(NO_SCHEDULABLE_HOST)
    assert isinstance(decision, Wait)
    assert "Docker engine stopped answering" in decision.message
    back = snapshot_of(fold(ENROLLED, REGISTERED, LOST, RETURNED))
    assert back is not None
    assert place([back], request) == Placed(H)


def test_a_user_is_told_the_engine_of_their_allocations_host_is_away() -> None:
    """Tried: alice's allocation runs on h1; h1's engine is recorded away, then back. Must hold:
    while away it is shown running and waiting for its host, cause `engine`, since the event,
    with a reason naming the Docker engine, and `alloc ls` says so; once back, no condition."""
    log, model = pool("wait", HostEngineLost(host_id="h1", detail="gone"))
    body = shown(model)
    assert body["state"] == "running"
    condition: dict[str, Any] = body["condition"]
    assert (condition["state"], condition["cause"]) == ("waiting_for_host", "engine")
    assert condition["since"] == since_of(log, "HostEngineLost")
    assert "Docker engine on its host stopped answering" in condition["reason"]
    assert _state(body).startswith("running (its host's Docker engine is away since ")
    log.add(host_stream("h1"), HostEngineReturned(host_id="h1"))
    log.add(alloc_stream("a1"), AllocationRunning(alloc_id="a1", host_id="h1", container_id="c1"))
    assert shown(folded(log)[0])["condition"] is None


class _Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject = subject
        self.data = data


def test_the_registry_takes_the_host_from_the_subject_never_from_the_report() -> None:
    """Tried: engine reports on a host's own subject, on another kind's subject, and one that is
    no report. Must hold: the host is the subject's (NATS lets a host publish only on its own);
    anything else is a poison message (dead-lettered)."""
    report = EngineStatus(available=False, detail="gone")
    host_id, read = engine_report_decoder(
        _Msg("potluck.report.h-b.engine", report.model_dump_json().encode())  # type: ignore[arg-type]
    )
    assert (host_id, read) == ("h-b", report)
    for subject, data in [
        ("potluck.report.h-b.usage", report.model_dump_json().encode()),
        ("potluck.report.h-b.engine.x", report.model_dump_json().encode()),
        ("potluck.report.h-b.engine", b"not a report"),
    ]:
        with pytest.raises(PoisonMessage):
            engine_report_decoder(_Msg(subject, data))  # type: ignore[arg-type]
