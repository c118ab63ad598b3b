"""hostd started while its Docker engine is not running (engine_at_start.py): how often it asks
the engine again and says so, and what the pool makes of a machine registered without its
engine's facts and reported engine away. Pure: no servers."""

import itertools

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    ENGINE_DETAIL_CHARS,
    HostEngineLost,
    HostEngineReturned,
    HostLost,
    HostRegistered,
)
from potluck.contracts.messages import RegisterHost
from potluck.contracts.reports import EngineStatus
from potluck.hostd.engine_at_start import (
    FIRST_WAIT_S,
    MAX_WAIT_S,
    NOT_RUNNING,
    SAY_EVERY,
    UNREAD_FACTS,
    next_wait,
    worth_saying,
)
from potluck.readmodels.hosts import HostState, host_as_dict
from potluck.registry import host
from tests.unit.test_host_engine import fold
from tests.unit.test_host_policy import ENGINE, ENROLLED, REGISTERED, H


def registration(engine: EngineFacts) -> RegisterHost:
    return RegisterHost(
        donated=Capacity(cpus=2, memory_bytes=1 << 30, disk_bytes=1 << 30),
        engine=engine,
        hostd_version="1",
        contract=CONTRACT_VERSION,
    )


def test_the_engine_is_asked_again_sooner_at_first_then_at_most_every_max_wait() -> None:
    """What is tried: the waits one after another, from none yet.
    What must hold: the first is FIRST_WAIT_S, each doubles the last, none passes MAX_WAIT_S,
    and the wait settles there."""
    waits: list[float] = []
    last: float | None = None
    for _ in range(12):
        last = next_wait(last)
        waits.append(last)
    assert waits[0] == FIRST_WAIT_S
    assert waits[1] == 2 * FIRST_WAIT_S
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert max(waits) == MAX_WAIT_S
    assert waits[-3:] == [MAX_WAIT_S] * 3


def test_the_member_is_told_again_every_say_every_failed_asks() -> None:
    """What is tried: the failed asks again, from the first to the 3*SAY_EVERY-th (the ask at
    start, which failed first, is logged by itself).
    What must hold: only every SAY_EVERY-th is logged."""
    said = [attempt for attempt in range(1, 3 * SAY_EVERY + 1) if worth_saying(attempt)]
    assert said == [SAY_EVERY, 2 * SAY_EVERY, 3 * SAY_EVERY]


def test_what_hostd_says_of_a_missing_engine_fits_the_report_and_the_event_and_says_what_to_do() -> None:
    """What is tried: NOT_RUNNING in an engine report and in the event it becomes.
    What must hold: neither cuts it, and it tells the member to start Docker."""
    assert "start Docker on this machine" in NOT_RUNNING
    assert len(NOT_RUNNING) <= ENGINE_DETAIL_CHARS
    assert EngineStatus(available=False, detail=NOT_RUNNING).detail == NOT_RUNNING


def test_a_machine_new_to_the_pool_registers_without_its_engine_then_is_engine_away() -> None:
    """What is tried: a machine only enrolled registers with UNREAD_FACTS, its hostd reports the
    engine not running; later it registers with the engine's facts and reports it back.
    What must hold: the registration is taken (HostRegistered with UNREAD_FACTS), the report
    becomes HostEngineLost with hostd's words, the host is online but not schedulable and its
    status says to start Docker; the second registration records the real facts without ending
    the absence, and only HostEngineReturned makes the host schedulable."""
    events = host.register(fold(ENROLLED), H, registration(UNREAD_FACTS))
    assert [type(e) for e in events] == [HostRegistered], events
    assert isinstance(events[0], HostRegistered)
    assert events[0].engine == UNREAD_FACTS
    registered = fold(ENROLLED, events[0])
    assert registered.schedulable  # for the moment until the engine report is read
    lost = host.engine_reported(registered, False, NOT_RUNNING)
    assert lost == [HostEngineLost(host_id=H, detail=NOT_RUNNING)]
    away = fold(ENROLLED, events[0], *lost)
    assert away.liveness == "online"
    assert away.admin == "active"
    assert not away.schedulable
    shown = host_as_dict(away)["engine_away"]
    assert isinstance(shown, dict)
    assert "start Docker on this machine" in str(shown["detail"]), shown

    again = host.register(away, H, registration(ENGINE))
    assert [type(e) for e in again] == [HostRegistered], again
    assert isinstance(again[0], HostRegistered)
    assert again[0].engine == ENGINE
    with_facts = fold(ENROLLED, events[0], *lost, again[0])
    assert with_facts.engine == ENGINE
    assert not with_facts.schedulable
    back = host.engine_reported(with_facts, True)
    assert back == [HostEngineReturned(host_id=H)]
    assert fold(ENROLLED, events[0], *lost, again[0], *back).schedulable


def test_a_machine_the_pool_knows_is_engine_away_before_it_is_online_again() -> None:
    """What is tried: a machine registered in an earlier run (then lost) whose hostd starts
    without its engine: the engine report read before the new registration.
    What must hold: the report records HostEngineLost at once, and the registration after it
    leaves the host online but engine away: never schedulable in between."""
    gone = HostLost(host_id=H, silent_for_s=600)
    earlier = fold(ENROLLED, REGISTERED, gone)
    assert earlier.liveness == "lost"
    lost = host.engine_reported(earlier, False, NOT_RUNNING)
    assert lost == [HostEngineLost(host_id=H, detail=NOT_RUNNING)]
    registered = host.register(fold(ENROLLED, REGISTERED, gone, *lost), H, registration(UNREAD_FACTS))
    assert [type(e) for e in registered] == [HostRegistered], registered
    state: HostState = fold(ENROLLED, REGISTERED, gone, *lost, *registered)
    assert state.liveness == "online"
    assert state.engine_away
    assert not state.schedulable
