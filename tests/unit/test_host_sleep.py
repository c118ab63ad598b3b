"""Sleep is its own state, not death: the Host aggregate's sleep decisions and the stranded grace.

Each state is built by folding real events with the registry's fold, as in test_host.py,
so a decision is checked on the state the registry would hold.
"""

from datetime import UTC, datetime, timedelta

import pytest

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostEnrolled,
    HostLost,
    HostRecovered,
    HostSleeping,
    HostSuspected,
    HostWoke,
)
from potluck.contracts.messages import RegisterHost, SleepNotice
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, evolve
from potluck.registry import host
from potluck.registry.liveness import STRANDED_GRACE_S, LivenessPolicy, silence_of

H = "h-1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SUSPECT_S, GRACE_S = 15.0, 28800.0
GIB = 1 << 30


def then(state: HostState | None, events: list[Event], at: datetime = T0) -> HostState:
    version = state.version if state else 0
    for event in events:
        version += 1
        state = evolve(state, event, version, at)
    assert state is not None
    return state


def registered(*after: Event, at: datetime = T0) -> HostState:
    req = RegisterHost(
        contract=CONTRACT_VERSION,
        donated=Capacity(cpus=2, memory_bytes=4 * GIB, disk_bytes=20 * GIB),
        engine=EngineFacts(
            version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
        ),
        hostd_version="1.0",
    )
    enrolled = then(None, [HostEnrolled(host_id=H, name="laptop", nkey="UKEY")])
    return then(then(enrolled, host.register(enrolled, H, req)), list(after), at)


def asleep() -> HostState:
    return registered(HostSleeping(host_id=H))


def silent(state: HostState, seconds: float) -> list[Event]:
    return host.went_silent(state, seconds, suspect_after_s=SUSPECT_S, stranded_grace_s=GRACE_S)


def test_announcing_sleep_makes_the_host_asleep_and_waiting_not_schedulable() -> None:
    """An online host says it sleeps: HostSleeping; it is asleep, its work waits, no new work."""
    events = host.sleep_noticed(registered(), H, SleepNotice())
    assert events == [HostSleeping(host_id=H)]
    state = then(registered(), events)
    assert (state.status, state.waiting, state.schedulable) == ("asleep", True, False)
    assert state.liveness_since == T0


def test_announcing_sleep_again_records_nothing() -> None:
    """A repeated announcement (hostd retried an unanswered notice) changes nothing."""
    assert host.sleep_noticed(asleep(), H, SleepNotice()) == []


@pytest.mark.parametrize("was", [HostSleeping(host_id=H), HostSuspected(host_id=H, silent_for_s=20)])
def test_waking_from_asleep_or_unreachable_is_host_woke_with_how_long(was: Event) -> None:
    """A host asleep or unreachable that says it slept 3600 s: HostWoke(3600), online again."""
    state = registered(was)
    events = host.sleep_noticed(state, H, SleepNotice(slept_s=3600.0))
    assert events == [HostWoke(host_id=H, slept_s=3600.0)]
    woke = then(state, events)
    assert (woke.status, woke.slept_s, woke.waiting) == ("active", 3600.0, False)


def test_a_lost_host_that_comes_back_saying_it_slept_woke() -> None:
    """Lost (its work already given up), then back saying it slept: HostWoke, active again."""
    lost = registered(HostLost(host_id=H, silent_for_s=GRACE_S))
    events = host.sleep_noticed(lost, H, SleepNotice(slept_s=GRACE_S + 5))
    assert [type(e) for e in events] == [HostWoke]
    assert then(lost, events).status == "active"


def test_a_nap_shorter_than_the_suspect_time_is_still_recorded_once() -> None:
    """Online throughout (the registry never noticed), it says it slept 4 s: HostWoke once;
    the same notice again (a retry) records nothing; another sleep of another length does."""
    state = registered()
    events = host.sleep_noticed(state, H, SleepNotice(slept_s=4.0))
    assert events == [HostWoke(host_id=H, slept_s=4.0)]
    state = then(state, events)
    assert host.sleep_noticed(state, H, SleepNotice(slept_s=4.0)) == []
    assert host.woke(state, 9.0) == [HostWoke(host_id=H, slept_s=9.0)]


def test_sleep_notices_from_a_host_not_registered_are_refused() -> None:
    """Not enrolled: NOT_ENROLLED; deregistered: NOT_REGISTERED; nothing recorded."""
    with pytest.raises(Rejected, match=r"^NOT_ENROLLED:"):
        host.sleep_noticed(None, H, SleepNotice())
    gone = registered(HostDeregistered(host_id=H, by="member"))
    with pytest.raises(Rejected, match=r"^NOT_REGISTERED:"):
        host.sleep_noticed(gone, H, SleepNotice(slept_s=1.0))


def test_an_asleep_host_is_never_suspected_however_long_it_is_silent_within_the_grace() -> None:
    """Silent past the suspect time while asleep: nothing (asleep says more than unreachable)."""
    assert silent(asleep(), SUSPECT_S * 100) == []
    assert silent(asleep(), GRACE_S - 0.001) == []


def test_an_online_host_silent_past_the_suspect_time_is_unreachable_not_lost() -> None:
    """Silence of unknown cause: unreachable, its work kept; not lost before the grace."""
    state = then(registered(), silent(registered(), SUSPECT_S + 1))
    assert (state.status, state.waiting) == ("unreachable", True)
    assert silent(state, GRACE_S - 1) == []


@pytest.mark.parametrize("was", [HostSleeping(host_id=H), HostSuspected(host_id=H, silent_for_s=20)])
def test_asleep_or_unreachable_past_the_stranded_grace_is_lost(was: Event) -> None:
    """Silent past `stranded_grace`, asleep or unreachable alike: HostLost, no longer waiting."""
    state = registered(was)
    events = silent(state, GRACE_S)
    assert events == [HostLost(host_id=H, silent_for_s=GRACE_S)]
    assert (then(state, events).status, then(state, events).waiting) == ("lost", False)


def test_a_beat_from_an_asleep_host_recovers_it() -> None:
    """A beat says the machine is up: HostRecovered(was="asleep"), online."""
    events = host.beat_returned(asleep())
    assert events == [HostRecovered(host_id=H, was="asleep")]
    assert then(asleep(), events).status == "active"


def test_the_default_stranded_grace_is_eight_hours_and_must_exceed_the_suspect_time() -> None:
    """LivenessPolicy defaults to 8 h; a grace no longer than the suspect time is refused, named."""
    assert LivenessPolicy().stranded_grace_s == STRANDED_GRACE_S == 8 * 3600
    with pytest.raises(ValueError, match="stranded_grace_s"):
        LivenessPolicy(5.0, 3, 15.0)


def test_silence_of_a_waiting_host_counts_from_the_log_when_the_clock_started_later() -> None:
    """A restarted registry has seen nobody for 10 s; a host asleep in the log since 7 h ago is
    silent 7 h for deciding; an online host's silence is the clock's alone."""
    slept_at = T0
    state = then(registered(), [HostSleeping(host_id=H)], at=slept_at)
    now = slept_at + timedelta(hours=7)
    assert silence_of(state, 10.0, now) == 7 * 3600
    assert silence_of(state, 8 * 3600.0, now) == 8 * 3600
    assert silence_of(registered(), 10.0, now) == 10.0


def test_an_online_host_is_silent_at_most_since_the_log_says_it_came_online() -> None:
    """A registry up for 10 s that has no beat of a host another registry registered 0.5 s ago
    (by the log): the host is silent 0.5 s, not 10, so neither suspected nor lost at once; one
    beaten 0.2 s ago is silent 0.2 s; a log clock ahead of the registry's gives 0, not less."""
    state = registered()
    assert state.liveness_since is not None
    came = state.liveness_since
    assert silence_of(state, 10.0, came + timedelta(seconds=0.5)) == 0.5
    assert silence_of(state, 0.2, came + timedelta(seconds=0.5)) == 0.2
    assert silence_of(state, 10.0, came - timedelta(seconds=3)) == 0.0
    recovered = then(
        registered(),
        [HostSuspected(host_id=H, silent_for_s=20), HostRecovered(host_id=H, was="unreachable")],
        at=came + timedelta(hours=1),
    )
    assert silence_of(recovered, 10.0, came + timedelta(hours=1, seconds=2)) == 2.0
