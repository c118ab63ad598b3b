"""Per-host capacity: the ledger folded from `capacity-<host_id>` streams, and the appends that place.

Pure: events in, state out; no I/O.

`CapacityLedger` folds CapacityReserved, CapacityRetained (an ended allocation
whose stopped container is kept holds only its disk) and CapacityFreed into what each host
has reserved, which allocation holds what, and each capacity stream's
version. An event at or below the version already folded is a replay and
changes nothing; one that could not be read (`passed_over`) still counts in
the version. Beyond that it is idempotent per allocation: a reservation an
allocation already holds on a host is not counted twice, and freeing what it
does not hold (a double free) changes nothing, so reserved can never go
negative. A free always gives back what the allocation holds, whatever amount
the event names.

`placement_appends` turns placements into the one atomic append that makes
them facts: AllocationPlaced on `alloc-<id>` expecting the version the
allocation was decided at, and CapacityReserved on `capacity-<host_id>`
expecting the version of the ledger the decision was made on. If another
allocator replica reserved on that host (or placed that allocation) in the
meantime, the append fails with WrongExpectedVersion and writes nothing; the
loser re-reads and decides again. That is why two replicas can never
over-commit a host.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from potluck.allocator.scheduler import ZERO, HostSnapshot, PlacementRequest, Scheduler
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    CapacityFreed,
    CapacityReserved,
    CapacityRetained,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.registry_locality import local_registry_of
from potluck.events import Event, StreamAppend
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.hosts import HostState, HostsView


class _HostLedger:
    __slots__ = ("holdings", "reserved", "version")

    def __init__(self) -> None:
        self.reserved: Capacity = ZERO
        self.version = 0
        self.holdings: dict[str, Capacity] = {}


class CapacityLedger:
    """Reserved capacity per host, folded from the capacity streams."""

    def __init__(self) -> None:
        self._hosts: dict[str, _HostLedger] = {}

    def apply(self, event: Event, *, version: int) -> bool:
        """Fold one event of `capacity-<event.host_id>` recorded at `version` in that stream.

        Returns whether the host's reserved amount changed. Events at or below
        the version already folded, and events of other kinds, are ignored.
        """
        if not isinstance(event, CapacityReserved | CapacityFreed | CapacityRetained):
            return False
        host = self._hosts.get(event.host_id)
        if host is None:
            host = self._hosts[event.host_id] = _HostLedger()
        if version <= host.version:
            return False  # folded already: a replay or a redelivery
        host.version = version
        if isinstance(event, CapacityReserved):
            if event.alloc_id in host.holdings:
                return False
            host.holdings[event.alloc_id] = event.amount
            host.reserved = host.reserved + event.amount
            return True
        if isinstance(event, CapacityRetained):
            holding = host.holdings.get(event.alloc_id)
            if holding is None:
                return False
            kept = Capacity.model_construct(
                cpus=0.0, memory_bytes=0, disk_bytes=min(event.disk_bytes, holding.disk_bytes)
            )
            host.holdings[event.alloc_id] = kept
            host.reserved = host.reserved - holding + kept
            return True
        held = host.holdings.pop(event.alloc_id, None)
        if held is None:
            return False
        host.reserved = host.reserved - held
        return True

    def passed_over(self, host_id: str, *, version: int) -> None:
        """An event of `capacity-<host_id>` at `version` that could not be read: only the version moves."""
        host = self._hosts.get(host_id)
        if host is None:
            host = self._hosts[host_id] = _HostLedger()
        host.version = max(host.version, version)

    @classmethod
    def rebuild(cls, events: Iterable[tuple[Event, int]]) -> "CapacityLedger":
        """From (event, version in its capacity stream) pairs, in log order."""
        ledger = cls()
        for event, version in events:
            ledger.apply(event, version=version)
        return ledger

    def reserved(self, host_id: str) -> Capacity:
        host = self._hosts.get(host_id)
        return host.reserved if host else ZERO

    def version(self, host_id: str) -> int:
        """The version of `capacity-<host_id>` this ledger has seen (0: no event yet)."""
        host = self._hosts.get(host_id)
        return host.version if host else 0

    def holdings(self, host_id: str) -> Mapping[str, Capacity]:
        """Which allocations hold what on the host."""
        host = self._hosts.get(host_id)
        return dict(host.holdings) if host else {}

    def holds(self, host_id: str, alloc_id: str) -> bool:
        host = self._hosts.get(host_id)
        return host is not None and alloc_id in host.holdings

    def host_ids(self) -> list[str]:
        """Hosts with a capacity stream, by id."""
        return sorted(self._hosts)


# --- from the read models to the scheduler --------------------------------------------------


def snapshot_of(
    state: HostState, reserved: Capacity = ZERO, held_images: frozenset[str] = frozenset()
) -> HostSnapshot | None:
    """A registered host as placement sees it; None for a host that donates nothing now.

    Hosts only enrolled, or deregistered by their member, are left out: they
    could give nothing, so they count neither for placing nor for "could ever fit".
    A host frozen by its owner's policy is not schedulable (HostState.schedulable); one
    throttled is, but comes last (scheduler.py).
    """
    if not state.registered or state.donated is None:
        return None
    return HostSnapshot(
        host_id=state.host_id,
        donated=state.donated,
        reserved=reserved,
        labels=dict(state.labels),
        schedulable=state.schedulable,
        allowed_images=tuple(state.allowed_images),
        allow_network=state.allow_network,
        held_images=held_images,
        throttled=state.policy == "throttled",
    )


def host_snapshots(
    view: HostsView,
    ledger: CapacityLedger,
    *,
    in_flight: Mapping[str, Capacity] | None = None,
    images: Mapping[str, frozenset[str]] | None = None,
) -> list[HostSnapshot]:
    """Every registered host with what the ledger says it has reserved, plus the reservations
    `in_flight` (queued for the log, not in the ledger yet), and the images it holds, by host id."""
    extra = in_flight or {}
    held = images or {}
    snapshots = []
    for host_id in sorted(view.hosts):
        reserved = ledger.reserved(host_id)
        if host_id in extra:
            reserved = reserved + extra[host_id]
        snapshot = snapshot_of(view.hosts[host_id], reserved, held.get(host_id, frozenset()))
        if snapshot is not None:
            snapshots.append(snapshot)
    return snapshots


def scheduler_for(view: HostsView, ledger: CapacityLedger) -> Scheduler:
    return Scheduler(host_snapshots(view, ledger))


def placement_request(
    state: AllocationState | AllocationRequested, pool_registry: str | None = None
) -> PlacementRequest:
    """What the scheduler needs to know of a requested allocation (`pool_registry`: the pool
    registry's address, whose images are no member's local registry)."""
    image = state.spec.image
    return PlacementRequest(
        alloc_id=state.alloc_id,
        resources=state.spec.resources,
        constraints=dict(state.constraints),
        image=image,
        network=state.spec.network,
        excluded_hosts=state.failed_on if isinstance(state, AllocationState) else frozenset(),
        local_registry=local_registry_of(image, pool_registry) if image is not None else None,
    )


def allocation_placed(
    state: AllocationState | AllocationRequested, host_id: str, now: datetime
) -> AllocationPlaced:
    """The placement of a requested allocation on `host_id`; its lifetime counts from `now`."""
    return AllocationPlaced(
        alloc_id=state.alloc_id,
        host_id=host_id,
        user=state.user,
        spec=state.spec,
        expires_at=now + timedelta(seconds=state.lifetime_s),
    )


# --- appends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """One decision to make a fact: `placed` goes on alloc-<id> expecting `alloc_version`.

    `preceding` events go first on the same stream (e.g. the AllocationRequested
    of a request placed at once, with `alloc_version` 0).
    """

    placed: AllocationPlaced
    alloc_version: int
    preceding: tuple[Event, ...] = ()

    @property
    def reservation(self) -> CapacityReserved:
        return CapacityReserved(
            host_id=self.placed.host_id,
            alloc_id=self.placed.alloc_id,
            amount=self.placed.spec.resources,
        )


def placement_appends(placements: Sequence[Placement], ledger: CapacityLedger) -> list[StreamAppend]:
    """The streams to append in one transaction for these placements.

    Each capacity stream expects the version `ledger` holds for it: the ledger
    the decisions were made on. Several placements on one host share that
    host's stream in the same append.
    """
    appends: list[StreamAppend] = []
    reservations: dict[str, list[Event]] = {}
    seen: set[str] = set()
    for p in placements:
        alloc_id = p.placed.alloc_id
        if alloc_id in seen:
            raise ValueError(f"allocation {alloc_id} is placed twice in one append")
        seen.add(alloc_id)
        appends.append(StreamAppend(alloc_stream(alloc_id), [*p.preceding, p.placed], p.alloc_version))
        reservations.setdefault(p.placed.host_id, []).append(p.reservation)
    for host_id, events in reservations.items():
        appends.append(StreamAppend(capacity_stream(host_id), events, ledger.version(host_id)))
    return appends


def reservation_appends(
    placed: AllocationPlaced,
    ledger: CapacityLedger,
    *,
    alloc_version: int,
    preceding: Sequence[Event] = (),
) -> list[StreamAppend]:
    """The two-stream append of one placement (see `placement_appends`)."""
    return placement_appends([Placement(placed, alloc_version, tuple(preceding))], ledger)
