"""What users are told of their allocation's host, and what the allocator does about a freeze.

Pure, without servers: the host and allocation events are written to the
in-memory log of test_allocator_model and folded as the allocator folds them.
Checked: the condition (waiting for the host, throttled, frozen) with its
reason and since when, in the API's body, the canonical form replay compares
and the user's CLI line; `on_preempt` from the HTTP body to the spec; the
frozen-too-long decision (not before the member's limit, once per freeze,
"wait" keeps the allocation, "release" ends it and frees its capacity, a host
that resumed in time leaves it alone).
"""

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from potluck.allocator.canonical import allocation_as_dict
from potluck.allocator.conditions import condition_of
from potluck.allocator.decisions import frozen_too_long, loss, requested
from potluck.allocator.model import AllocatorModel
from potluck.allocator.schemas import Allocation, CreateAllocation
from potluck.contracts.allocation_events import (
    AllocationFrozenTooLong,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
    CapacityFreed,
    OnPreempt,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.host_events import (
    HostDrainStarted,
    HostFrozen,
    HostPaused,
    HostRecovered,
    HostResumed,
    HostShareRestored,
    HostSleeping,
    HostSuspected,
    HostThrottled,
    host_stream,
)
from potluck.events import Event
from potluck.user.cli import _state
from tests.unit.test_allocator_model import T0, RecordingLog, cap, folded, host, placed

THROTTLED = HostThrottled(host_id="h1", cause="owner", reason="the owner uses 1.3 CPUs", share_cpus=0.5)


def frozen(max_frozen_s: float | None = 60) -> HostFrozen:
    return HostFrozen(host_id="h1", cause="battery", reason="on battery", max_frozen_s=max_frozen_s)


def pool(on_preempt: OnPreempt = "wait", *host_events: Event) -> tuple[RecordingLog, AllocatorModel]:
    """Host h1 with allocation a1 running on it, then `host_events` on h1's stream."""
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    wanted = AllocationSpec(resources=cap(1), image="potluck-test:1", on_preempt=on_preempt)
    placed(log, "a1", "alice", "h1", wanted)
    log.add(alloc_stream("a1"), AllocationRunning(alloc_id="a1", host_id="h1", container_id="c1"))
    for event in host_events:
        log.add(host_stream("h1"), event)
    return log, folded(log)[0]


def shown(model: AllocatorModel, alloc_id: str = "a1") -> dict[str, Any]:
    state = model.allocations.allocations[alloc_id]
    body: dict[str, Any] = Allocation.of(state, model.hosts.hosts.get(state.host_id or "")).model_dump(
        mode="json"
    )
    return body


def since_of(log: RecordingLog, type_name: str) -> str:
    """When the last event of `type_name` was recorded, as the API writes times."""
    at = next(r.recorded_at for r in reversed(log.records) if r.type == type_name)
    return at.isoformat().replace("+00:00", "Z")


# --- what users are told ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "cause"),
    [(HostSleeping(host_id="h1"), "asleep"), (HostSuspected(host_id="h1", silent_for_s=20), "unreachable")],
)
def test_an_allocation_on_a_host_away_is_waiting_for_it_since_it_went(event: Event, cause: str) -> None:
    """The host sleeps, or stops answering: the allocation stays running and is shown waiting for
    its host, with the cause and the time of the event that took the host away, in the API and
    the CLI line."""
    log, model = pool("wait", event)
    body = shown(model)
    assert body["state"] == "running"
    assert body["condition"] == {
        "state": "waiting_for_host",
        "cause": cause,
        "reason": body["condition"]["reason"],
        "since": since_of(log, event.type_name),
        "share_cpus": None,
        "until": None,
    }
    assert "its host" in body["condition"]["reason"]
    assert _state(body).startswith("running (waiting for host since ")
    assert _state(body).endswith(f": {cause})")


def test_waiting_comes_before_the_policy_and_ends_when_the_host_returns() -> None:
    """A throttled host that falls asleep shows waiting; back online, it shows throttled again,
    since the throttle began (not since the host returned)."""
    log, model = pool("wait", THROTTLED, HostSleeping(host_id="h1"))
    assert shown(model)["condition"]["state"] == "waiting_for_host"
    log.add(host_stream("h1"), HostRecovered(host_id="h1", was="asleep"))
    body = shown(folded(log)[0])
    assert body["condition"] == {
        "state": "throttled",
        "cause": "owner",
        "reason": "the owner uses 1.3 CPUs",
        "since": since_of(log, "HostThrottled"),
        "share_cpus": 0.5,
        "until": None,
    }
    assert _state(body).startswith("running (throttled since ")
    assert _state(body).endswith(": the owner uses 1.3 CPUs)")


def test_a_frozen_host_shows_frozen_with_its_reason_and_a_restored_one_nothing() -> None:
    """HostFrozen: frozen with the policy's cause, reason and time (no share); HostShareRestored:
    no condition, and the CLI line is the bare state."""
    log, model = pool("wait", frozen())
    body = shown(model)
    assert body["condition"] == {
        "state": "frozen",
        "cause": "battery",
        "reason": "on battery",
        "since": since_of(log, "HostFrozen"),
        "share_cpus": None,
        "until": None,
    }
    log.add(host_stream("h1"), HostShareRestored(host_id="h1"))
    model = folded(log)[0]
    assert shown(model)["condition"] is None
    assert _state(shown(model)) == "running"


def test_a_host_its_member_paused_shows_frozen_by_the_member_whatever_the_policy_says() -> None:
    """Tried: a throttled host, then its member pauses it (`potluck host pause`): hostd freezes
    the pool's containers. Must hold: the allocation shows frozen with cause `member` since the
    pause, not the policy's throttle; resumed, it shows the policy's condition again."""
    log, model = pool("wait", THROTTLED, HostPaused(host_id="h1", by="member"))
    body = shown(model)
    assert body["condition"] == {
        "state": "frozen",
        "cause": "member",
        "reason": "the host's member paused it: the container is frozen until they resume it",
        "since": since_of(log, "HostPaused"),
        "share_cpus": None,
        "until": None,
    }
    assert _state(body).startswith("running (frozen since ")
    log.add(host_stream("h1"), HostResumed(host_id="h1", by="member"))
    assert shown(folded(log)[0])["condition"]["state"] == "throttled"


def test_a_draining_host_tells_its_users_when_their_container_is_stopped() -> None:
    """Tried: the member drains the host with a grace of ten minutes. Must hold: the allocation
    shows draining with cause `member`, since the drain began, and `until` ten minutes later,
    when hostd stops the container; the CLI line says when it is stopped."""
    log, model = pool("wait", HostDrainStarted(host_id="h1", by="member", grace_s=600))
    body = shown(model)
    since = since_of(log, "HostDrainStarted")
    drained_at = next(r.recorded_at for r in log.records if r.type == "HostDrainStarted") + timedelta(
        seconds=600
    )
    assert body["condition"]["state"] == "draining"
    assert body["condition"]["cause"] == "member"
    assert body["condition"]["since"] == since
    assert body["condition"]["until"] == drained_at.isoformat().replace("+00:00", "Z")
    assert "stopped when the drain's grace ends" in body["condition"]["reason"]
    assert _state(body).startswith("running (its host drains: stopped at ")
    row = allocation_as_dict(model.allocations.allocations["a1"], model.hosts.hosts["h1"])
    assert row["condition"]["until"] == drained_at.isoformat()  # replay's form of the same time


def test_an_allocation_that_ended_has_no_condition_and_a_lost_one_shows_why() -> None:
    """A lost allocation on a host that sleeps is not waiting: it ended, and its user reads why."""
    log, model = pool("wait", HostSleeping(host_id="h1"))
    state = model.allocations.allocations["a1"]
    log.append(loss(state, "h1", reason="host revoked by ops: stolen laptop"))
    model = folded(log)[0]
    body = shown(model)
    assert body["state"] == "lost"
    assert body["condition"] is None
    assert body["reason"] == "host revoked by ops: stolen laptop"
    assert _state(body) == "lost (host revoked by ops: stolen laptop)"
    assert condition_of(model.allocations.allocations["a1"], model.hosts.hosts["h1"]) is None


def test_the_canonical_form_carries_the_condition_the_mark_and_on_preempt() -> None:
    """What `replay --check` compares: the same fields as the API, from the same models."""
    _, model = pool("release", THROTTLED)
    row = allocation_as_dict(model.allocations.allocations["a1"], model.hosts.hosts["h1"])
    assert row["on_preempt"] == "release"
    assert row["condition"]["state"] == "throttled"
    assert row["condition"]["share_cpus"] == 0.5
    assert row["frozen_too_long"] is None
    assert allocation_as_dict(model.allocations.allocations["a1"])["condition"] is None


# --- on_preempt from the request ----------------------------------------------------------------


def test_on_preempt_defaults_to_wait_is_checked_and_reaches_the_spec() -> None:
    """The HTTP body's on_preempt: `wait` when absent, `release` reaches the spec of the request,
    anything else is refused naming the field."""
    base = {"cpus": 1, "memory": "1G", "image": "img:1"}
    assert CreateAllocation.model_validate(base).on_preempt == "wait"
    body = CreateAllocation.model_validate({**base, "on_preempt": "release"})
    assert requested("alice", "a9", body).spec.on_preempt == "release"
    with pytest.raises(ValidationError) as caught:
        CreateAllocation.model_validate({**base, "on_preempt": "kill"})
    assert caught.value.errors()[0]["loc"] == ("on_preempt",)


# --- frozen too long ----------------------------------------------------------------------------


def frozen_at(log: RecordingLog) -> Any:
    return next(r.recorded_at for r in reversed(log.records) if r.type == "HostFrozen")


def test_not_marked_before_the_members_limit_nor_without_one() -> None:
    """Frozen exactly max_frozen_s, or frozen without a limit for a month: nothing to append, and
    the model lists nothing due."""
    log, model = pool("release", frozen(60))
    state, h1 = model.allocations.allocations["a1"], model.hosts.hosts["h1"]
    assert frozen_too_long(state, h1, frozen_at(log) + timedelta(seconds=60)) == []
    assert model.frozen_too_long(frozen_at(log) + timedelta(seconds=60)) == []
    log, model = pool("release", frozen(None))
    state, h1 = model.allocations.allocations["a1"], model.hosts.hosts["h1"]
    assert frozen_too_long(state, h1, frozen_at(log) + timedelta(days=30)) == []


def test_wait_is_marked_once_per_freeze_and_keeps_running() -> None:
    """Past the limit, an on_preempt=wait allocation gets one AllocationFrozenTooLong (expecting
    its stream's version) and stays running and frozen; later rounds of the same freeze find
    nothing; a new freeze after a restore is marked again."""
    log, model = pool("wait", frozen(60))
    now = frozen_at(log) + timedelta(seconds=61)
    assert model.frozen_too_long(now) == ["a1"]
    state, h1 = model.allocations.allocations["a1"], model.hosts.hosts["h1"]
    [append] = frozen_too_long(state, h1, now)
    assert append.stream == alloc_stream("a1")
    assert append.expected_version == state.version
    [mark] = append.events
    assert isinstance(mark, AllocationFrozenTooLong)
    assert (mark.host_id, mark.frozen_since, mark.frozen_s, mark.max_frozen_s) == (
        "h1",
        frozen_at(log),
        61,
        60,
    )
    log.append([append])
    model = folded(log)[0]
    body = shown(model)
    assert body["state"] == "running"
    assert body["condition"]["state"] == "frozen"
    assert body["frozen_too_long"]["frozen_s"] == 61
    # Marked once: later rounds find nothing to do for this freeze.
    later = now + timedelta(hours=1)
    assert model.frozen_too_long(later) == []
    assert frozen_too_long(model.allocations.allocations["a1"], model.hosts.hosts["h1"], later) == []
    # Resumed, then frozen again: a new freeze, marked again once past the limit.
    log.add(host_stream("h1"), HostShareRestored(host_id="h1"))
    log.add(host_stream("h1"), frozen(60))
    model = folded(log)[0]
    assert model.frozen_too_long(frozen_at(log) + timedelta(seconds=61)) == ["a1"]


def test_release_is_marked_and_released_in_one_append_freeing_its_capacity() -> None:
    """Past the limit, an on_preempt=release allocation is marked and released by `policy` in one
    append with its CapacityFreed; its user reads the reason, the mark and the CLI line
    `released (frozen too long)`; the host holds nothing for it any more."""
    log, model = pool("release", frozen(60))
    now = frozen_at(log) + timedelta(seconds=90)
    state, h1 = model.allocations.allocations["a1"], model.hosts.hosts["h1"]
    appends = frozen_too_long(state, h1, now)
    assert [a.stream for a in appends] == [alloc_stream("a1"), capacity_stream("h1")]
    mark, released = appends[0].events
    assert isinstance(mark, AllocationFrozenTooLong)
    assert isinstance(released, AllocationReleased)
    assert released.by == "policy"
    assert "90s" in released.reason
    assert "60s" in released.reason
    [freed] = appends[1].events
    assert isinstance(freed, CapacityFreed)
    log.append(appends)
    model = folded(log)[0]
    body = shown(model)
    assert body["state"] == "released"
    assert body["reason"] == released.reason
    assert body["frozen_too_long"]["max_frozen_s"] == 60
    assert body["condition"] is None
    assert _state(body) == "released (frozen too long)"
    assert model.ledger.holdings("h1") == {}
    assert model.frozen_too_long(now) == []


def test_a_host_that_resumed_in_time_leaves_its_allocations_alone() -> None:
    """Frozen, then restored before the limit: hours later nothing is due; a throttled host is
    never due, however long."""
    log, model = pool("release", frozen(60), HostShareRestored(host_id="h1"))
    now = frozen_at(log) + timedelta(hours=2)
    state, h1 = model.allocations.allocations["a1"], model.hosts.hosts["h1"]
    assert frozen_too_long(state, h1, now) == []
    assert model.frozen_too_long(now) == []
    # Throttled is not frozen: no mark however long it lasts.
    log, model = pool("release", THROTTLED)
    assert model.frozen_too_long(T0 + timedelta(days=3)) == []


def test_a_refused_allocation_says_why_and_its_detail_in_the_api_and_the_cli() -> None:
    """A request refused after waiting past its queue timeout: its user reads the reason next to
    the state and the detail the refusal gave (the API had only the bare code before)."""
    log, _ = pool()
    spec = AllocationSpec(resources=cap(8), image="potluck-test:1")
    log.add(
        alloc_stream("a2"),
        AllocationRequested(alloc_id="a2", user="alice", spec=spec, lifetime_s=60, queue_timeout_s=30),
    )
    log.add(
        alloc_stream("a2"),
        AllocationRefused(alloc_id="a2", reason="QUEUE_TIMEOUT", detail="no capacity freed within 30s"),
    )
    body = shown(folded(log)[0], "a2")
    assert (body["state"], body["reason"]) == ("refused", "QUEUE_TIMEOUT")
    assert body["detail"] == "no capacity freed within 30s"
    assert body["waiting"] is None
    assert _state(body) == "refused (QUEUE_TIMEOUT)"
