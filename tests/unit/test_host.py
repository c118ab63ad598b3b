"""The Host aggregate (services/registry/host.py): every command, accepted and refused.

The aggregate only decides: a state and a command in, the events to record
out, or `Rejected` with a stable code. Each test builds the state by folding
events with the registry's own fold (`evolve`), so a decision is checked on
the state the registry would really hold.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    Actor,
    HostDeregistered,
    HostDrainStarted,
    HostEnrolled,
    HostLeft,
    HostLost,
    HostPaused,
    HostRecovered,
    HostRegistered,
    HostResumed,
    HostRevoked,
    HostSuspected,
)
from potluck.contracts.messages import ControlHost, RegisterHost
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, evolve, host_as_dict
from potluck.registry import host

GIB = 1 << 30
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)
H = "h-1"
SUSPECT_S, LOST_S = 15.0, 300.0

Silence = Literal["unreachable", "lost"]


def request(**changes: object) -> RegisterHost:
    fields: dict[str, object] = {
        "donated": Capacity(cpus=2, memory_bytes=4 * GIB, disk_bytes=20 * GIB),
        "labels": {"name": "laptop"},
        "allowed_images": ["potluck-test:1"],
        "engine": ENGINE,
        "hostd_version": "1.0",
        "ssh_host_key": "ssh-ed25519 AAAA",
        "contract": CONTRACT_VERSION,
    }
    fields.update(changes)
    return RegisterHost.model_validate(fields)


def fold(*events: Event) -> HostState | None:
    state: HostState | None = None
    for version, event in enumerate(events, start=1):
        state = evolve(state, event, version, T0)
    return state


def enrolled() -> HostState:
    state = fold(HostEnrolled(host_id=H, name="laptop", nkey="UKEY"))
    assert state is not None
    return state


def then(state: HostState | None, events: list[Event]) -> HostState:
    """`state` after `events`, as the registry folds them."""
    version = state.version if state else 0
    for event in events:
        version += 1
        state = evolve(state, event, version, T0)
    assert state is not None
    return state


def registered(*after: Event, req: RegisterHost | None = None) -> HostState:
    return then(enrolled(), [*host.register(enrolled(), H, req or request()), *after])


def control(action: str, grace_s: float = 300.0) -> ControlHost:
    return ControlHost.model_validate({"action": action, "grace_s": grace_s})


def types(events: list[Event]) -> list[str]:
    return [type(e).type_name for e in events]


def refused(code: str) -> "pytest.RaisesExc[Rejected]":
    return pytest.raises(Rejected, match=f"^{code}:")


# --- enroll -----------------------------------------------------------------------------------


def test_enroll_a_new_host_records_its_name_and_public_key() -> None:
    assert host.enroll(None, H, "laptop", "UKEY") == [HostEnrolled(host_id=H, name="laptop", nkey="UKEY")]


def test_enroll_refuses_a_host_already_enrolled_naming_it() -> None:
    with refused("HOST_EXISTS") as info:
        host.enroll(enrolled(), H, "other", "UKEY2")
    assert "'laptop'" in info.value.message


# --- register ---------------------------------------------------------------------------------


def test_register_refuses_a_host_never_enrolled_with_404() -> None:
    with refused("NOT_ENROLLED") as info:
        host.register(None, H, request())
    assert info.value.status == 404
    assert "enroll" in info.value.message


def test_register_an_enrolled_host_records_everything_it_offers() -> None:
    req = request()
    [event] = host.register(enrolled(), H, req)
    assert event == HostRegistered(
        host_id=H,
        donated=req.donated,
        labels=req.labels,
        allowed_images=req.allowed_images,
        engine=req.engine,
        hostd_version=req.hostd_version,
        ssh_host_key=req.ssh_host_key,
        contract=req.contract,
    )
    state = then(enrolled(), [event])
    assert (state.registered, state.admin, state.status) == (True, "active", "active")


def test_registering_again_unchanged_while_online_records_nothing() -> None:
    assert host.register(registered(), H, request()) == []


@pytest.mark.parametrize(
    "change",
    [
        {"donated": Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB)},
        {"labels": {"name": "laptop", "gpu": "yes"}},
        {"allowed_images": ["other:2"]},
        {"allow_network": True},
        {"engine": ENGINE.model_copy(update={"version": "28.0"})},
        {"hostd_version": "1.1"},
        {"ssh_host_key": "ssh-ed25519 BBBB"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_registering_with_anything_changed_records_it_again(change: dict[str, object]) -> None:
    req = request(**change)
    assert types(host.register(registered(), H, req)) == ["HostRegistered"]
    assert then(registered(), host.register(registered(), H, req)).hostd_version == req.hostd_version


@pytest.mark.parametrize("was", ["unreachable", "lost"])
def test_registering_again_unchanged_after_silence_is_a_recovery(was: Silence) -> None:
    went: Event = HostSuspected(host_id=H, silent_for_s=20)
    if was == "lost":
        went = HostLost(host_id=H, silent_for_s=400)
    silent = registered(went)
    assert host.register(silent, H, request()) == [HostRecovered(host_id=H, was=was)]


def test_registering_keeps_an_operators_pause_but_lifts_a_deregistration() -> None:
    paused = registered(HostPaused(host_id=H, by="operator"))
    assert then(paused, host.register(paused, H, request(hostd_version="2"))).admin == "paused"
    gone = registered(HostDeregistered(host_id=H, by="member"))
    back = then(gone, host.register(gone, H, request()))
    assert (back.registered, back.admin, back.status) == (True, "active", "active")


def test_a_deregistered_host_registering_unchanged_is_registered_again() -> None:
    gone = registered(HostDeregistered(host_id=H, by="operator"))
    assert types(host.register(gone, H, request())) == ["HostRegistered"]


@pytest.mark.parametrize("contract", [CONTRACT_VERSION + 1, CONTRACT_VERSION + 7])
def test_a_hostd_of_another_contract_is_refused_whatever_the_host_was(contract: int) -> None:
    for state in (enrolled(), registered(), registered(HostLost(host_id=H, silent_for_s=400))):
        with refused("CONTRACT_MISMATCH") as info:
            host.register(state, H, request(contract=contract))
        assert (info.value.field, info.value.status) == ("contract", 409)
        assert f"speaks contract {contract} and the pool's services {CONTRACT_VERSION}" in info.value.message


def test_a_host_left_behind_by_an_upgrade_is_not_schedulable_until_it_registers_again() -> None:
    """Registered under another contract (its hostd outlived the services' version): online and
    active, and still nothing is placed there; its upgraded hostd's registration records the
    pool's contract, although nothing else changed."""
    behind = then(enrolled(), [HostRegistered(**{**request().model_dump(), "host_id": H, "contract": 9})])
    assert (behind.status, behind.contract, behind.schedulable) == ("active", 9, False)
    events = host.register(behind, H, request())
    assert types(events) == ["HostRegistered"]
    upgraded = then(behind, events)
    assert (upgraded.contract, upgraded.schedulable) == (CONTRACT_VERSION, True)


# --- control ----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["pause", "resume", "drain", "deregister"])
def test_control_refuses_a_host_never_enrolled(action: str) -> None:
    with refused("NOT_ENROLLED"):
        host.control(None, H, control(action), "operator", now=T0)


@pytest.mark.parametrize("action", ["pause", "resume", "drain", "deregister"])
def test_control_refuses_a_host_enrolled_but_never_registered(action: str) -> None:
    with refused("NOT_REGISTERED") as info:
        host.control(enrolled(), H, control(action), "member", now=T0)
    assert "start its hostd" in info.value.message


@pytest.mark.parametrize("action", ["pause", "resume", "drain", "deregister"])
def test_control_refuses_a_deregistered_host(action: str) -> None:
    with refused("NOT_REGISTERED"):
        gone = registered(HostDeregistered(host_id=H, by="member"))
        host.control(gone, H, control(action), "member", now=T0)


@pytest.mark.parametrize("by", ["member", "operator"])
def test_pause_resume_drain_and_deregister_record_who_asked(by: Actor) -> None:
    active = registered()
    assert host.control(active, H, control("pause"), by, now=T0) == [HostPaused(host_id=H, by=by)]
    paused = registered(HostPaused(host_id=H, by="operator"))
    assert host.control(paused, H, control("resume"), by, now=T0) == [HostResumed(host_id=H, by=by)]
    drain = [HostDrainStarted(host_id=H, by=by, grace_s=42)]
    assert host.control(active, H, control("drain", 42), by, now=T0) == drain
    assert host.control(active, H, control("deregister"), by, now=T0) == [HostDeregistered(host_id=H, by=by)]


@pytest.mark.parametrize(
    ("already", "action"),
    [
        (HostPaused(host_id=H, by="operator"), "pause"),
        (HostDrainStarted(host_id=H, by="operator", grace_s=5), "drain"),
        (None, "resume"),
    ],
)
def test_a_control_that_already_took_effect_records_nothing(already: Event | None, action: str) -> None:
    state = registered(*([already] if already else []))
    assert host.control(state, H, control(action), "member", now=T0) == []


def test_resume_lifts_a_drain_and_pause_replaces_it() -> None:
    draining = registered(HostDrainStarted(host_id=H, by="member", grace_s=5))
    assert types(host.control(draining, H, control("resume"), "member", now=T0)) == ["HostResumed"]
    assert types(host.control(draining, H, control("pause"), "member", now=T0)) == ["HostPaused"]


def test_a_drain_during_a_drain_only_brings_its_end_forward() -> None:
    """Tried: a 300 s drain, then drains asked 100 s into it. Must hold: a grace ending before
    the 200 s left starts the drain again (the member needs the machine sooner); one ending
    later, or as late, records nothing; once the grace is over nothing starts it again."""
    draining = registered(HostDrainStarted(host_id=H, by="member", grace_s=300))
    later = T0 + timedelta(seconds=100)
    assert host.control(draining, H, control("drain", 200), "member", now=later) == []
    assert host.control(draining, H, control("drain", 600), "member", now=later) == []
    sooner = host.control(draining, H, control("drain", 10), "operator", now=later)
    assert sooner == [HostDrainStarted(host_id=H, by="operator", grace_s=10)]
    over = T0 + timedelta(seconds=400)
    assert host.control(draining, H, control("drain", 0), "member", now=over) == []


def test_a_draining_host_shows_when_its_drain_ends_and_no_longer_once_resumed() -> None:
    draining = registered(HostDrainStarted(host_id=H, by="member", grace_s=90))
    assert host_as_dict(draining)["drain"] == {
        "grace_s": 90,
        "started_at": T0.isoformat(),
        "ends_at": (T0 + timedelta(seconds=90)).isoformat(),
    }
    resumed = then(draining, host.control(draining, H, control("resume"), "member", now=T0))
    assert host_as_dict(resumed)["drain"] is None


def test_drain_of_a_paused_host_starts_draining_with_its_grace() -> None:
    paused = registered(HostPaused(host_id=H, by="member"))
    events = host.control(paused, H, control("drain", 7), "member", now=T0)
    state = then(paused, events)
    assert (state.admin, state.drain_grace_s, state.schedulable) == ("draining", 7, False)


def test_controls_apply_to_a_silent_host_too() -> None:
    lost = registered(HostLost(host_id=H, silent_for_s=400))
    assert types(host.control(lost, H, control("pause"), "operator", now=T0)) == ["HostPaused"]
    assert types(host.control(lost, H, control("deregister"), "operator", now=T0)) == ["HostDeregistered"]


def test_deregister_leaves_the_pool() -> None:
    state = registered()
    gone = then(state, host.control(state, H, control("deregister"), "member", now=T0))
    assert (gone.registered, gone.admin, gone.liveness) == (False, "deregistered", None)
    assert gone.status == "deregistered"


def test_an_action_the_contract_does_not_know_is_refused_as_a_bad_field() -> None:
    # Only a caller that skips validation can get here; the aggregate still refuses it clearly.
    unknown = ControlHost.model_construct(action="explode", grace_s=0.0)  # type: ignore[arg-type]
    with refused("UNKNOWN_ACTION") as info:
        host.control(registered(), H, unknown, "operator", now=T0)
    assert (info.value.field, info.value.status) == ("action", 400)


# --- leave and revoke: for good ----------------------------------------------------------------

LEFT = HostLeft(host_id=H, by="member")
REVOKED = HostRevoked(host_id=H, by="olga", reason="stolen from a train")


@pytest.mark.parametrize("by", ["member", "operator"])
def test_leave_records_who_left_and_a_second_leave_records_nothing(by: Actor) -> None:
    """A registered host leaves; the state is left, unregistered, not schedulable; again: nothing."""
    state = registered()
    assert host.control(state, H, control("leave"), by, now=T0) == [HostLeft(host_id=H, by=by)]
    left = then(state, [HostLeft(host_id=H, by=by)])
    assert (left.status, left.registered, left.schedulable, left.gone) == ("left", False, False, True)
    assert host.control(left, H, control("leave"), by, now=T0) == []


@pytest.mark.parametrize(
    "before",
    [[], [HostDeregistered(host_id=H, by="member")], [HostLost(host_id=H, silent_for_s=400)]],
    ids=["never-registered", "deregistered", "lost"],
)
def test_a_host_not_registered_or_silent_may_still_leave(before: list[Event]) -> None:
    """Leaving needs no running hostd: an enrolled, deregistered or lost host may leave too."""
    state = then(enrolled(), before) if before else enrolled()
    if before and isinstance(before[0], HostLost):
        state = registered(*before)
    assert host.leave(state, H, "member") == [HostLeft(host_id=H, by="member")]


def test_leave_of_a_host_never_enrolled_is_refused() -> None:
    with refused("NOT_ENROLLED"):
        host.leave(None, H, "member")


def test_a_left_host_registering_again_is_refused_for_good() -> None:
    """Unlike a deregistration, leaving is not lifted by the next registration (hostd restarted,
    NATS reconnected): HOST_LEFT, saying that an operator must enroll it again."""
    left = registered(LEFT)
    with refused("HOST_LEFT") as info:
        host.register(left, H, request())
    assert "enroll it again" in info.value.message
    with refused("HOST_LEFT"):
        host.register(left, H, request(hostd_version="9"))


@pytest.mark.parametrize("action", ["pause", "resume", "drain", "deregister"])
def test_controls_of_a_gone_host_are_refused_with_why(action: str) -> None:
    with refused("HOST_LEFT"):
        host.control(registered(LEFT), H, control(action), "member", now=T0)
    with refused("HOST_REVOKED") as info:
        host.control(registered(REVOKED), H, control(action), "operator", now=T0)
    assert "olga" in info.value.message
    assert "stolen from a train" in info.value.message


def test_revoke_records_who_and_why_and_a_second_revoke_records_nothing() -> None:
    """The first revocation stands: revoking again (another reason) records nothing."""
    state = registered()
    assert host.revoke(state, H, "olga", "  stolen from a train ") == [REVOKED]
    revoked = then(state, [REVOKED])
    assert (revoked.status, revoked.revoked_by, revoked.revoked_reason) == (
        "revoked",
        "olga",
        "stolen from a train",
    )
    assert host.revoke(revoked, H, "piet", "again") == []


def test_a_host_that_left_may_still_be_revoked_but_a_revoked_one_cannot_leave() -> None:
    assert host.revoke(registered(LEFT), H, "olga", "stolen after it left") == [
        HostRevoked(host_id=H, by="olga", reason="stolen after it left")
    ]
    with refused("HOST_REVOKED"):
        host.leave(registered(REVOKED), H, "member")


def test_a_revoked_host_registering_again_is_refused_with_the_reason() -> None:
    with refused("HOST_REVOKED") as info:
        host.register(registered(REVOKED), H, request())
    assert info.value.message.endswith("ask an operator to enroll it again")
    assert "stolen from a train" in info.value.message


def test_revoke_refuses_a_host_never_enrolled_an_anonymous_revoker_and_a_long_reason() -> None:
    with refused("NOT_ENROLLED"):
        host.revoke(None, H, "olga", "")
    with refused("BAD_REQUEST") as anonymous:
        host.revoke(registered(), H, "  ", "stolen")
    assert anonymous.value.field == "by"
    with refused("BAD_REQUEST") as long:
        host.revoke(registered(), H, "olga", "x" * (host.MAX_REASON + 1))
    assert long.value.field == "reason"


def test_gone_refusal_names_only_left_and_revoked_hosts() -> None:
    assert host.gone_refusal(registered()) is None
    assert host.gone_refusal(registered(HostDeregistered(host_id=H, by="member"))) is None
    left, revoked = host.gone_refusal(registered(LEFT)), host.gone_refusal(registered(REVOKED))
    assert left is not None
    assert revoked is not None
    assert (left.code, revoked.code) == ("HOST_LEFT", "HOST_REVOKED")


def test_a_gone_host_beating_or_silent_records_nothing() -> None:
    """Beats of a left or revoked host bring nothing back; its silence means nothing."""
    for gone in (registered(LEFT), registered(REVOKED)):
        assert host.beat_returned(gone) == []
        assert silent(gone, LOST_S * 10) == []


# --- liveness ---------------------------------------------------------------------------------


def silent(state: HostState, seconds: float) -> list[Event]:
    return host.went_silent(state, seconds, suspect_after_s=SUSPECT_S, stranded_grace_s=LOST_S)


def test_a_host_quiet_for_less_than_the_suspect_time_is_left_alone() -> None:
    assert silent(registered(), SUSPECT_S - 0.001) == []


def test_an_online_host_silent_past_the_suspect_time_becomes_suspect() -> None:
    assert silent(registered(), SUSPECT_S) == [HostSuspected(host_id=H, silent_for_s=SUSPECT_S)]


def test_silence_is_recorded_rounded_to_milliseconds() -> None:
    [event] = silent(registered(), 20.123456)
    assert isinstance(event, HostSuspected)
    assert event.silent_for_s == 20.123


def test_a_host_silent_past_the_lost_time_is_lost_whether_online_or_suspect() -> None:
    assert silent(registered(), LOST_S) == [HostLost(host_id=H, silent_for_s=LOST_S)]
    suspect = registered(HostSuspected(host_id=H, silent_for_s=SUSPECT_S))
    assert silent(suspect, LOST_S + 1) == [HostLost(host_id=H, silent_for_s=LOST_S + 1)]


def test_a_suspect_host_is_not_suspected_again_nor_a_lost_one_lost_again() -> None:
    assert silent(registered(HostSuspected(host_id=H, silent_for_s=SUSPECT_S)), SUSPECT_S + 5) == []
    assert silent(registered(HostLost(host_id=H, silent_for_s=LOST_S)), LOST_S * 10) == []


def test_silence_of_a_host_not_registered_means_nothing() -> None:
    assert silent(enrolled(), LOST_S * 10) == []
    assert silent(registered(HostDeregistered(host_id=H, by="member")), LOST_S * 10) == []


def test_silence_decides_on_liveness_not_on_admin_state() -> None:
    paused = registered(HostPaused(host_id=H, by="member"))
    assert types(silent(paused, SUSPECT_S)) == ["HostSuspected"]


@pytest.mark.parametrize("was", ["unreachable", "lost"])
def test_a_beat_from_a_silent_host_is_a_recovery(was: Silence) -> None:
    state = replace(registered(), liveness=was)
    assert host.beat_returned(state) == [HostRecovered(host_id=H, was=was)]
    assert then(state, host.beat_returned(state)).liveness == "online"


def test_a_beat_from_an_online_or_unregistered_host_records_nothing() -> None:
    assert host.beat_returned(registered()) == []
    assert host.beat_returned(enrolled()) == []
    assert host.beat_returned(registered(HostDeregistered(host_id=H, by="member"))) == []
