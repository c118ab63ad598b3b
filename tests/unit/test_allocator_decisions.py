"""The allocator's pure decisions (services/allocator/decisions.py), without servers.

Each decision is checked for what it appends and with which expected
versions, and the appends are written to an in-memory log that enforces
expected versions as the event store does, then folded back into the model:
what the allocator decides on a model that counts its requests in flight is
accepted by the log in the order it was decided; what it would decide on a
model that forgot them is refused.
"""

from dataclasses import replace
from datetime import timedelta

import pytest

from potluck.allocator.decisions import (
    MAX_EXPIRY,
    Outlook,
    check_quota,
    ending,
    expiry,
    extension,
    loss,
    loss_reason,
    never_fits,
    placement,
    refusal,
    release,
    request_appends,
    requested,
    timed_out,
)
from potluck.allocator.in_flight import InFlight, InFlightRequests
from potluck.allocator.model import AllocatorModel
from potluck.allocator.scheduler import (
    NO_FREE_CAPACITY,
    NO_HOST_REGISTERED,
    NO_SCHEDULABLE_HOST,
    ZERO,
    Impossible,
    Placed,
    Wait,
)
from potluck.allocator.schemas import CreateAllocation
from potluck.contracts.allocation_events import (
    DEFAULT_DISK_QUOTA,
    AllocationExpired,
    AllocationExtended,
    AllocationLost,
    AllocationPlaced,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    CapacityFreed,
    CapacityReserved,
    Quota,
    QuotaCharged,
    UserAdded,
    alloc_stream,
    capacity_stream,
    quota_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import (
    HostDeregistered,
    HostLeft,
    HostLost,
    HostPaused,
    HostRevoked,
    HostSuspected,
)
from potluck.events import Event, Fold, StreamAppend, WrongExpectedVersion
from potluck.events.schema import registry
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState
from tests.unit.test_allocator_model import GIB, T0, RecordingLog, cap, host, placed, spec


def body(cpus: float, **more: object) -> CreateAllocation:
    return CreateAllocation.model_validate(
        {"cpus": cpus, "memory": "1G", "disk": "1G", "image": "img:1", **more}
    )


class Allocator:
    """The model folded from a log, the requests in flight, and a way to make decisions facts."""

    def __init__(self, log: RecordingLog) -> None:
        self.log = log
        self.model = AllocatorModel()
        self.fold = Fold(self.model, reader="test")
        self.in_flight = InFlightRequests()
        self.catch_up()

    def catch_up(self) -> None:
        self.fold.apply_all(self.log.records)

    @property
    def outlook(self) -> Outlook:
        return Outlook(self.model, self.in_flight)

    def decide_request(self, user: str, alloc_id: str, cpus: float) -> list[StreamAppend]:
        """What the engine decides for a new request, counted in flight as the engine does."""
        request = requested(user, alloc_id, body(cpus))
        decision = self.outlook.place(request, "best_fit")
        assert not isinstance(decision, Impossible)
        host_id = decision.host_id if isinstance(decision, Placed) else None
        appends = request_appends(
            request,
            host_id,
            now=T0,
            quota_version=self.outlook.quota_version(user),
            capacity_version=self.outlook.capacity_version(host_id) if host_id else 0,
        )
        self.in_flight.add(InFlight(alloc_id, user, request.spec.resources, host_id))
        return appends


def state(status: str = "running", **changes: object) -> AllocationState:
    base = AllocationState(
        alloc_id="a1",
        user="alice",
        spec=spec(1),
        lifetime_s=600,
        status="placed",
        host_id="h1",
        expires_at=T0 + timedelta(minutes=10),
        version=2,
        requested_at=T0,
    )
    return replace(base, status=status, **changes)  # type: ignore[arg-type]


# --- a new request ----------------------------------------------------------------------------


def test_a_request_is_what_the_body_asks_for() -> None:
    request = requested(
        "alice", "a1", body(1.5, lifetime="2h", queue_timeout=30, constraints={"arch": "arm64"})
    )
    assert request.user == "alice"
    assert request.spec.resources == Capacity(cpus=1.5, memory_bytes=GIB, disk_bytes=GIB)
    assert request.spec.image == "img:1"
    assert (request.lifetime_s, request.queue_timeout_s) == (7200, 30)
    assert request.constraints == {"arch": "arm64"}


def test_the_quota_counts_allocations_cpus_and_memory() -> None:
    quota = Quota(cpus=4, memory_bytes=4 * GIB, allocations=3)
    check_quota(quota, {"a1": cap(1), "a2": cap(1)}, cap(2, 2))  # exactly full: allowed
    check_quota(quota, {}, Capacity(cpus=4.0000000001, memory_bytes=GIB, disk_bytes=GIB))  # rounding
    refusals = [
        ({"a1": cap(0.1), "a2": cap(0.1), "a3": cap(0.1)}, cap(0.1), None),
        ({"a1": cap(3)}, cap(1.5), "cpus"),
        ({"a1": cap(1, 3)}, cap(1, 2), "memory"),
    ]
    for held, wanted, field in refusals:
        with pytest.raises(Rejected) as refused:
            check_quota(quota, held, wanted)
        assert (refused.value.code, refused.value.status, refused.value.field) == (
            "QUOTA_EXCEEDED",
            403,
            field,
        )


def test_the_quota_counts_disk_and_users_added_before_it_get_the_default() -> None:
    """A user can no longer hold terabytes of disk: the disk held counts against `disk_bytes`,
    and a UserAdded recorded before that field existed reads with the default quota."""
    quota = Quota(cpus=64, memory_bytes=64 * GIB, allocations=10, disk_bytes=3 * GIB)
    held = {"a1": Capacity(cpus=1, memory_bytes=GIB, disk_bytes=2 * GIB)}
    check_quota(quota, held, Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB))  # exactly full
    with pytest.raises(Rejected) as refused:
        check_quota(quota, held, Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB + 1))
    assert (refused.value.code, refused.value.status, refused.value.field) == ("QUOTA_EXCEEDED", 403, "disk")

    old = registry.decode(
        "UserAdded",
        1,
        {
            "user": "old",
            "token_sha256": "0" * 64,
            "quota": {"cpus": 8.0, "memory_bytes": GIB, "allocations": 10},
        },
    )
    assert isinstance(old, UserAdded)
    assert old.quota.disk_bytes == DEFAULT_DISK_QUOTA == 64 * GIB


def test_a_request_placed_at_once_charges_the_quota_first_then_places_and_reserves() -> None:
    request = AllocationRequested(alloc_id="a1", user="alice", spec=spec(1), lifetime_s=60)
    appends = request_appends(request, "h1", now=T0, quota_version=4, capacity_version=7)
    assert [(a.stream, a.expected_version) for a in appends] == [
        (quota_stream("alice"), 4),
        (alloc_stream("a1"), 0),
        (capacity_stream("h1"), 7),
    ]
    assert appends[0].events == [QuotaCharged(user="alice", alloc_id="a1")]
    first, then = appends[1].events
    assert first == request
    assert isinstance(then, AllocationPlaced)
    assert (then.host_id, then.expires_at) == ("h1", T0 + timedelta(seconds=60))
    assert appends[2].events == [CapacityReserved(host_id="h1", alloc_id="a1", amount=cap(1))]


def test_a_request_that_must_wait_is_recorded_pending() -> None:
    request = AllocationRequested(alloc_id="a1", user="alice", spec=spec(1), lifetime_s=60)
    appends = request_appends(request, None, now=T0, quota_version=0)
    assert [(a.stream, a.expected_version, list(a.events)) for a in appends][1:] == [
        (alloc_stream("a1"), 0, [request])
    ]


def test_placing_a_pending_request_expects_the_versions_it_was_decided_on() -> None:
    appends = placement(state("pending", version=1), "h2", now=T0, alloc_version=1, capacity_version=3)
    assert [(a.stream, a.expected_version) for a in appends] == [
        (alloc_stream("a1"), 1),
        (capacity_stream("h2"), 3),
    ]
    (event,) = appends[0].events
    assert isinstance(event, AllocationPlaced)
    assert event.expires_at == T0 + timedelta(seconds=600)


# --- the model with requests in flight --------------------------------------------------------


def test_requests_in_flight_count_against_hosts_versions_and_quotas_until_folded() -> None:
    log = RecordingLog()
    host(log, "h1", cap(2, 8))
    host(log, "h2", cap(2, 8))
    allocator = Allocator(log)

    # Decided one after another, none folded yet: each counts for the next.
    first = allocator.decide_request("alice", "a1", 2)
    second = allocator.decide_request("alice", "a2", 2)
    third = allocator.decide_request("alice", "a3", 2)  # the pool is full, counting what flies
    hosts = {first[-1].stream, second[-1].stream}
    assert hosts == {capacity_stream("h1"), capacity_stream("h2")}
    assert [a.stream for a in third] == [quota_stream("alice"), alloc_stream("a3")]
    assert [a.expected_version for a in (first[0], second[0], third[0])] == [0, 1, 2]
    assert allocator.outlook.held_by("alice").keys() == {"a1", "a2", "a3"}
    assert allocator.outlook.reservations() == {"h1": cap(2), "h2": cap(2)}

    # The log takes them in the order they were decided.
    for appends in (first, second, third):
        log.append(appends)
    allocator.catch_up()
    for alloc_id in ("a1", "a2", "a3"):
        allocator.in_flight.settle(alloc_id)
    assert allocator.outlook.capacity_version("h1") == allocator.model.ledger.version("h1") == 1
    assert allocator.outlook.quota_version("alice") == 3
    assert allocator.model.held_by("alice").keys() == {"a1", "a2", "a3"}
    assert isinstance(allocator.outlook.place(allocator.model.allocations.allocations["a3"], "spread"), Wait)


def test_a_decision_that_forgets_the_requests_in_flight_is_refused_by_the_log() -> None:
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    allocator = Allocator(log)
    stale = Allocator(log)  # will know nothing of what `allocator` decides
    first = allocator.decide_request("alice", "a1", 1)
    second = allocator.decide_request("alice", "a2", 1)
    with pytest.raises(WrongExpectedVersion):
        log.append(second)  # it counted `first` in its expected versions
    log.append(first)
    log.append(second)
    with pytest.raises(WrongExpectedVersion):
        log.append(stale.decide_request("alice", "a3", 1))


def test_a_reservation_the_ledger_holds_already_is_not_counted_twice() -> None:
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    placed(log, "a1", "alice", "h1", spec(1))
    model = AllocatorModel()
    Fold(model, reader="test").apply_all(log.records)
    flying = InFlightRequests()
    flying.add(InFlight("a1", "alice", cap(1), "h1"))  # folded, not settled yet
    flying.add(InFlight("a2", "alice", cap(2), "h1"))
    flying.add(InFlight("a3", "bob", cap(1), None))
    outlook = Outlook(model, flying)
    assert outlook.in_flight_on("h1") == {"a2": cap(2)}
    assert outlook.capacity_version("h1") == 2
    assert outlook.reservations() == {"h1": cap(2)}
    assert outlook.quota_version("alice") == 1 + 1  # a1 charged and folded; a2 not folded
    assert outlook.quota_version("bob") == 1
    assert outlook.held_by("alice") == {"a1": cap(1), "a2": cap(2)}


# --- changes and ends -------------------------------------------------------------------------


def test_an_end_frees_what_an_active_allocation_holds() -> None:
    event = AllocationLost(alloc_id="a1", host_id="h1")
    alloc, freed = ending(state("running"), event)
    assert (alloc.stream, alloc.expected_version, list(alloc.events)) == (alloc_stream("a1"), 2, [event])
    assert (freed.stream, freed.expected_version) == (capacity_stream("h1"), None)
    assert freed.events == [CapacityFreed(host_id="h1", alloc_id="a1", amount=cap(1))]
    assert len(ending(state("pending", host_id=None), event)) == 1


def test_release() -> None:
    (alloc, _freed) = release(state("running"), "user:alice")
    assert alloc.events == [AllocationReleased(alloc_id="a1", host_id="h1", by="user:alice")]
    (only,) = release(state("pending", host_id=None), "user:alice")
    assert only.events == [AllocationReleased(alloc_id="a1", host_id=None, by="user:alice")]
    assert release(state("exited"), "user:alice") == []


def test_an_extension_moves_the_expiry_at_most_a_week_ahead() -> None:
    (later,) = extension(state("running"), 3600, T0)
    assert later.expected_version == 2
    assert later.events == [AllocationExtended(alloc_id="a1", expires_at=T0 + timedelta(minutes=70))]
    (capped,) = extension(state("running"), 30 * 86400, T0)
    assert capped.events == [AllocationExtended(alloc_id="a1", expires_at=T0 + MAX_EXPIRY)]
    (from_now,) = extension(state("pending", expires_at=None), 60, T0)
    assert from_now.events == [AllocationExtended(alloc_id="a1", expires_at=T0 + timedelta(seconds=60))]
    with pytest.raises(Rejected) as refused:
        extension(state("released"), 60, T0)
    assert refused.value.code == "ALREADY_ENDED"


def test_loss_only_of_what_is_active_on_the_lost_host() -> None:
    alloc, _ = loss(state("running"), "h1")
    assert alloc.events == [AllocationLost(alloc_id="a1", host_id="h1")]
    assert loss(state("running"), "h2") == []
    assert loss(state("exited"), "h1") == []


def test_loss_tells_the_user_the_reason_given() -> None:
    """A loss decided with a reason carries it in AllocationLost, which is what the user reads."""
    alloc, freed = loss(state("running"), "h1", "host revoked by olga: stolen")
    lost = AllocationLost(alloc_id="a1", host_id="h1", reason="host revoked by olga: stolen")
    assert alloc.events == [lost]
    assert freed.events == [CapacityFreed(host_id="h1", alloc_id="a1", amount=cap(1))]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (HostLost(host_id="h1", silent_for_s=400), "host lost"),
        (HostDeregistered(host_id="h1", by="member"), "host deregistered by its member"),
        (HostLeft(host_id="h1", by="member"), "host left the pool"),
        (HostRevoked(host_id="h1", by="olga", reason="stolen laptop"), "host revoked by olga: stolen laptop"),
        (HostRevoked(host_id="h1", by="olga"), "host revoked by olga"),
        (HostPaused(host_id="h1", by="member"), None),
        (HostSuspected(host_id="h1", silent_for_s=20), None),
    ],
)
def test_which_host_events_take_its_allocations_and_why(event: Event, reason: str | None) -> None:
    """Lost, deregistered, left and revoked hosts take their allocations with them, each with the
    reason the users read; a pause or a silence (the host may come back) takes nothing."""
    assert loss_reason(event) == reason


def test_expiry_only_when_the_lifetime_has_run_out() -> None:
    due = T0 + timedelta(minutes=10)
    assert expiry(state("running"), due - timedelta(seconds=1)) == []
    alloc, _ = expiry(state("running"), due)
    assert alloc.events == [AllocationExpired(alloc_id="a1", host_id="h1")]
    assert expiry(state("released"), due) == []


def test_a_pending_request_is_refused_after_its_queue_timeout_or_when_it_can_never_fit() -> None:
    waiting = state("pending", host_id=None, queue_timeout_s=30, version=1)
    assert timed_out(waiting, T0 + timedelta(seconds=30)) == []
    (refused,) = timed_out(waiting, T0 + timedelta(seconds=31))
    assert refused.expected_version == 1
    assert refused.events == [
        AllocationRefused(alloc_id="a1", reason="QUEUE_TIMEOUT", detail="no capacity freed within 30s")
    ]
    assert timed_out(state("running"), T0 + timedelta(days=1)) == []
    (never,) = never_fits(waiting, Impossible("NO_HOST_FITS", "no host has 64 CPUs", "cpus"))
    assert never.events == [
        AllocationRefused(alloc_id="a1", reason="NO_HOST_COULD_EVER_FIT", detail="no host has 64 CPUs")
    ]
    assert refusal(waiting, "QUOTA_EXCEEDED", "")[0].stream == alloc_stream("a1")


def test_a_queue_timeout_says_what_the_request_waited_for() -> None:
    """Tried: requests refused at their queue timeout while only a paused (or frozen, away, ...)
    host could hold them, while the pool had no host, and while hosts were full. Before, each
    read "no capacity freed within 30s", as if a host were full. Must hold: each says what it
    waited for, and what to wait for is asked only when a request is refused."""
    waiting = state("pending", host_id=None, queue_timeout_s=30, version=1)
    late = T0 + timedelta(seconds=31)

    def detail(decision: Wait) -> str:
        [refused] = timed_out(waiting, late, lambda: decision)
        [event] = refused.events
        assert isinstance(event, AllocationRefused)
        return event.detail

    assert detail(Wait(NO_SCHEDULABLE_HOST)).startswith(
        "no host that could hold it took work within 30s: only hosts that are away, paused"
    )
    assert detail(Wait(NO_HOST_REGISTERED)) == "no host joined the pool within 30s"
    assert detail(Wait(NO_FREE_CAPACITY)) == "no capacity freed within 30s"

    def never_asked() -> Wait:
        raise AssertionError("asked what it waits for before its timeout")

    assert timed_out(waiting, T0 + timedelta(seconds=29), never_asked) == []


def test_ends_decided_on_the_model_are_accepted_by_the_log() -> None:
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    placed(log, "a1", "alice", "h1", spec(1))
    placed(log, "a2", "alice", "h1", spec(1))
    allocator = Allocator(log)
    allocations = allocator.model.allocations.allocations
    log.append(release(allocations["a1"], "user:alice"))
    log.append(expiry(allocations["a2"], T0 + timedelta(hours=2)))
    allocator.catch_up()
    assert allocations["a1"].status == "released"
    assert allocations["a2"].status == "expired"
    assert allocator.model.ledger.reserved("h1") == ZERO
    with pytest.raises(WrongExpectedVersion):  # decided on the state before the release
        log.append(
            ending(
                replace(allocations["a1"], status="running", version=2),
                AllocationLost(alloc_id="a1", host_id="h1"),
            )
        )
