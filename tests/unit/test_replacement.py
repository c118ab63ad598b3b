"""A failed pull re-places the allocation on another host (issue 14), without servers.

What must hold: a host's `image_pull_failed` (and only that reason) sends an
allocation that is active there back to pending (AllocationUnplaced, its
capacity freed in the same append), remembering the host and its reason; the
read model shows it pending with no host, and the host no longer wants it;
placement never puts it on a host it failed on (both scheduler
implementations, any pool); once MAX_PULL_HOSTS hosts failed, or no host
left could take it, it fails with `image_pull_failed` and a detail naming each
host's reason; its queue timeout counts from its return, not its request.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.capacity import placement_request
from potluck.allocator.decisions import never_fits, queue_deadline, timed_out
from potluck.allocator.lifecycle import MAX_PULL_HOSTS, decide
from potluck.allocator.scheduler import (
    NO_FREE_CAPACITY,
    NO_HOST_LEFT,
    STRATEGIES,
    ZERO,
    HostSnapshot,
    Impossible,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
    place,
)
from potluck.allocator.schemas import Allocation
from potluck.contracts.allocation_events import (
    AllocationFailed,
    AllocationPlaced,
    AllocationPulling,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
    AllocationUnplaced,
    CapacityFreed,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_images import image_keys
from potluck.contracts.image_reference import image_allowed
from potluck.contracts.reports import ContainerFailed
from potluck.events import Event, PoisonMessage
from potluck.readmodels.allocations import AllocationState, AllocationsView, PullFailure

GIB = 1 << 30
T0 = datetime(2025, 1, 1, tzinfo=UTC)
RESOURCES = Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB)
SPEC = AllocationSpec(resources=RESOURCES, image="pool.example/alice/tool:1")


def cap(cpus: float, memory: int = 4 * GIB, disk: int = 10 * GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def pull_failed(host_id: str) -> ContainerFailed:
    return ContainerFailed(
        alloc_id="a1", reason="image_pull_failed", detail=f"registry unreachable from {host_id}"
    )


def view_of(*events: Event) -> AllocationsView:
    view = AllocationsView()
    for n, event in enumerate(events, start=1):
        view.apply(event, position=n, version=n, at=T0 + timedelta(seconds=n))
    return view


def requested() -> AllocationRequested:
    return AllocationRequested(alloc_id="a1", user="alice", spec=SPEC, lifetime_s=600, queue_timeout_s=60)


def placed(host_id: str) -> AllocationPlaced:
    return AllocationPlaced(alloc_id="a1", host_id=host_id, user="alice", spec=SPEC, expires_at=T0)


def unplaced(host_id: str) -> AllocationUnplaced:
    return AllocationUnplaced(
        alloc_id="a1",
        host_id=host_id,
        reason="image_pull_failed",
        detail=f"registry unreachable from {host_id}",
    )


def state_after(*events: Event) -> AllocationState:
    return view_of(*events).allocations["a1"]


# --- the allocator's decision on the host's report -------------------------------------------


@pytest.mark.parametrize("status", ["placed", "pulling"])
def test_a_failed_pull_sends_the_allocation_back_and_frees_the_host(status: str) -> None:
    events: list[Event] = [requested(), placed("h1")]
    if status == "pulling":
        events.append(AllocationPulling(alloc_id="a1", host_id="h1", image=SPEC.image))
    current = state_after(*events)
    decision = decide(current, "h1", pull_failed("h1"))
    assert decision is not None
    assert decision.expected == current.version
    assert decision.streams == {
        alloc_stream("a1"): [unplaced("h1")],
        capacity_stream("h1"): [CapacityFreed(host_id="h1", alloc_id="a1", amount=RESOURCES)],
    }


def test_other_failures_still_fail_the_allocation() -> None:
    current = state_after(requested(), placed("h1"))
    report = ContainerFailed(alloc_id="a1", reason="start_failed", detail="no such file")
    decision = decide(current, "h1", report)
    assert decision is not None
    assert decision.alloc_events == [
        AllocationFailed(alloc_id="a1", host_id="h1", reason="start_failed", detail="no such file")
    ]


def test_a_failed_pull_on_the_last_host_allowed_fails_it_naming_every_host() -> None:
    hosts = [f"h{n}" for n in range(1, MAX_PULL_HOSTS + 1)]
    events: list[Event] = [requested()]
    for host_id in hosts[:-1]:
        events += [placed(host_id), unplaced(host_id)]
    events.append(placed(hosts[-1]))
    current = state_after(*events)
    decision = decide(current, hosts[-1], pull_failed(hosts[-1]))
    assert decision is not None
    [left, failed] = decision.alloc_events
    assert left == unplaced(hosts[-1])
    assert isinstance(failed, AllocationFailed)
    assert failed.reason == "image_pull_failed"
    assert failed.host_id == hosts[-1]
    for host_id in hosts:
        assert f"host {host_id}: registry unreachable from {host_id}" in failed.detail
    assert SPEC.image in failed.detail
    assert decision.capacity_events == [CapacityFreed(host_id=hosts[-1], alloc_id="a1", amount=RESOURCES)]
    ended = view_of(*events, *decision.alloc_events).allocations["a1"]
    assert (ended.status, ended.reason) == ("failed", "image_pull_failed")
    assert [f.host_id for f in ended.pull_failures] == hosts


def test_a_late_pull_failure_changes_nothing_and_another_hosts_is_poison() -> None:
    back = state_after(requested(), placed("h1"), unplaced("h1"))
    with pytest.raises(PoisonMessage):
        decide(back, "h1", pull_failed("h1"))  # it is no longer placed there
    running = state_after(
        requested(), placed("h1"), AllocationRunning(alloc_id="a1", host_id="h1", container_id="c")
    )
    assert decide(replace(running, status="exited"), "h1", pull_failed("h1")) is None
    with pytest.raises(PoisonMessage):
        decide(running, "h2", pull_failed("h2"))


# --- the read model --------------------------------------------------------------------------


def test_an_unplaced_allocation_is_pending_again_with_the_hosts_reason_kept() -> None:
    view = view_of(
        requested(),
        placed("h1"),
        AllocationPulling(alloc_id="a1", host_id="h1", image=SPEC.image, done_bytes=5, total_bytes=9),
        unplaced("h1"),
    )
    state = view.allocations["a1"]
    assert state.status == "pending"
    assert state.host_id is None
    assert state.expires_at is None
    assert state.pull_done_bytes is None
    assert state.pull_failures == (PullFailure("h1", "image_pull_failed", "registry unreachable from h1"),)
    assert state.failed_on == {"h1"}
    assert state.pending_since == T0 + timedelta(seconds=4)
    assert view.desired_for("h1") == []  # hostd's snapshot no longer holds it
    shown = Allocation.of(state)
    assert shown.state == "pending"
    assert [(f.host_id, f.detail) for f in shown.failed_on] == [("h1", "registry unreachable from h1")]


def test_placed_again_it_runs_on_the_next_host_and_keeps_its_history() -> None:
    view = view_of(
        requested(),
        placed("h1"),
        unplaced("h1"),
        placed("h2"),
        AllocationRunning(alloc_id="a1", host_id="h2", container_id="c2"),
    )
    state = view.allocations["a1"]
    assert (state.status, state.host_id, state.failed_on) == ("running", "h2", frozenset({"h1"}))
    assert [a.alloc_id for a in view.desired_for("h2")] == ["a1"]
    assert view.desired_for("h1") == []


def test_an_unplaced_for_a_host_it_is_not_on_changes_nothing() -> None:
    before = state_after(requested(), placed("h2"))
    after = state_after(requested(), placed("h2"), unplaced("h1"))
    assert (after.status, after.host_id, after.pull_failures) == (before.status, "h2", ())


# --- placing it again ------------------------------------------------------------------------


def test_its_next_placement_excludes_the_hosts_it_failed_on() -> None:
    state = state_after(requested(), placed("h1"), unplaced("h1"), placed("h2"), unplaced("h2"))
    assert placement_request(state).excluded_hosts == {"h1", "h2"}
    assert placement_request(requested()).excluded_hosts == frozenset()


def test_its_queue_timeout_counts_from_its_return() -> None:
    state = replace(
        state_after(requested(), placed("h1"), unplaced("h1")),
        requested_at=T0 - timedelta(hours=1),
        pending_since=T0,
    )
    assert queue_deadline(state) == T0 + timedelta(seconds=60)
    assert timed_out(state, T0 + timedelta(seconds=59)) == []
    assert timed_out(state, T0 + timedelta(seconds=61)) != []


def test_when_no_host_is_left_it_fails_with_each_hosts_reason() -> None:
    """Two hosts, the image failed on both before MAX_PULL_HOSTS: the scheduler says no host
    is left, and the allocation fails with image_pull_failed naming both, not refused."""
    hosts = [HostSnapshot("h1", cap(4)), HostSnapshot("h2", cap(4)), HostSnapshot("h3", cap(0.5))]
    state = state_after(requested(), placed("h1"), unplaced("h1"), placed("h2"), unplaced("h2"))
    decision = place(hosts, placement_request(state))
    assert isinstance(decision, Impossible)
    assert Scheduler(hosts).place(placement_request(state)) == decision
    [append] = never_fits(state, decision)
    [failed] = append.events
    assert isinstance(failed, AllocationFailed)
    assert failed.reason == "image_pull_failed"
    assert "host h1: registry unreachable from h1" in failed.detail
    assert "host h2: registry unreachable from h2" in failed.detail
    assert append.expected_version == state.version


# --- the scheduler -----------------------------------------------------------------------------


def _both(hosts: list[HostSnapshot], req: PlacementRequest, strategy: Strategy = "best_fit") -> object:
    decision = place(hosts, req, strategy)
    assert Scheduler(hosts).place(req, strategy) == decision
    return decision


def test_an_excluded_host_is_passed_over_even_holding_the_image() -> None:
    hosts = [
        HostSnapshot("a", cap(2), held_images=frozenset(image_keys("debian:12"))),
        HostSnapshot("b", cap(8)),
    ]
    req = PlacementRequest("r", cap(1, GIB, GIB), image="debian:12")
    assert _both(hosts, req) == Placed("a")
    assert _both(hosts, replace(req, excluded_hosts=frozenset({"a"}))) == Placed("b")


def test_with_the_others_full_it_waits_and_with_none_left_it_is_impossible() -> None:
    hosts = [HostSnapshot("a", cap(2)), HostSnapshot("b", cap(2), reserved=cap(2))]
    req = PlacementRequest("r", cap(1, GIB, GIB), excluded_hosts=frozenset({"a"}))
    assert _both(hosts, req) == Wait(NO_FREE_CAPACITY)
    none_left = _both(hosts, replace(req, excluded_hosts=frozenset({"a", "b"})))
    assert isinstance(none_left, Impossible)
    assert none_left.code == NO_HOST_LEFT
    assert none_left.field == "image"


def test_a_large_pool_agrees_with_place_as_hosts_are_excluded_one_by_one() -> None:
    """Hundreds of hosts (the index's search, not its small-candidate scan), most holding
    the image: excluding each host chosen in turn, both implementations agree and never
    choose an excluded one."""
    keys = frozenset(image_keys("debian:12"))
    hosts = [
        HostSnapshot(
            f"h{i:03d}", cap(1 + i % 7, (1 + i % 5) * GIB), held_images=keys if i % 3 else frozenset()
        )
        for i in range(300)
    ]
    scheduler = Scheduler(hosts)
    for strategy in STRATEGIES:
        excluded: set[str] = set()
        for _ in range(12):
            req = PlacementRequest(
                "r", cap(1, GIB, GIB), image="debian:12", excluded_hosts=frozenset(excluded)
            )
            decision = scheduler.place(req, strategy)
            assert decision == place(hosts, req, strategy)
            assert isinstance(decision, Placed)
            assert decision.host_id not in excluded
            excluded.add(decision.host_id)


@st.composite
def _pools(draw: st.DrawFn) -> tuple[list[HostSnapshot], PlacementRequest]:
    n = draw(st.integers(0, 6))
    ids = [f"h{i}" for i in range(n)]
    hosts = [
        HostSnapshot(
            host_id,
            cap(draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 4])) * GIB),
            reserved=draw(st.sampled_from([ZERO, cap(1, GIB, GIB)])),
            labels=draw(st.sampled_from([{}, {"arch": "amd64"}])),
            schedulable=draw(st.booleans()),
            allowed_images=draw(st.sampled_from([(), (), ("debian:*",)])),
            held_images=draw(st.sampled_from([frozenset(), frozenset(image_keys("alpine:3"))])),
        )
        for host_id in ids
    ]
    req = PlacementRequest(
        "r",
        cap(draw(st.sampled_from([0.5, 1, 3])), GIB, GIB),
        constraints=draw(st.sampled_from([{}, {}, {"arch": "amd64"}])),
        image=draw(st.sampled_from([None, "alpine:3", "debian:12"])),
        excluded_hosts=frozenset(draw(st.lists(st.sampled_from([*ids, "gone"]), max_size=4)))
        if ids
        else frozenset(),
    )
    return hosts, req


@given(_pools(), st.sampled_from(STRATEGIES))
def test_never_placed_on_an_excluded_host(
    case: tuple[list[HostSnapshot], PlacementRequest], strategy: Strategy
) -> None:
    """Any pool, any exclusions: both implementations decide alike; a placement is never on
    an excluded host; NO_HOST_LEFT exactly when hosts match and admit it but all are excluded."""
    hosts, req = case
    decision = _both(hosts, req, strategy)
    if isinstance(decision, Placed):
        assert decision.host_id not in req.excluded_hosts
    admitting = [
        h
        for h in hosts
        if all(h.labels.get(k) == v for k, v in req.constraints.items())
        and (req.image is None or image_allowed(h.allowed_images, req.image))
    ]
    none_left = bool(admitting) and all(h.host_id in req.excluded_hosts for h in admitting)
    assert (isinstance(decision, Impossible) and decision.code == NO_HOST_LEFT) == none_left
