"""Pure fold of allocation events into allocation state: the allocator's read model.

Lifecycle: pending -> placed [-> pulling] -> running -> exited | failed | lost | expired |
released, or pending -> refused. A host that cannot get the image sends the allocation back
(placed | pulling -> pending, AllocationUnplaced), remembering that host and why in
`pull_failures`, so it is placed again elsewhere. An active allocation that its host's owner
policy kept frozen past the member's limit is marked (`frozen_too_long`,
AllocationFrozenTooLong) and keeps its state. An allocation that exited may keep its stopped
container (`kept_until`, its spec's keep_for_s) until AllocationDiscarded. `desired_for(host)`
is what a host should be running and `kept_on(host)` what it keeps stopped: the snapshot a
hostd asks for at start.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    AllocationEvent,
    AllocationExited,
    AllocationExpired,
    AllocationExtended,
    AllocationFailed,
    AllocationFrozenTooLong,
    AllocationLost,
    AllocationPlaced,
    AllocationPulling,
    AllocationPullProgressed,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationRestarted,
    AllocationRunning,
    AllocationSpec,
    AllocationUnplaced,
)
from potluck.events import Event
from potluck.kernel.records import changed
from potluck.readmodels.owner_index import OwnerIndex

AllocationStatus = Literal[
    "pending", "placed", "pulling", "running", "exited", "failed", "lost", "expired", "released", "refused"
]
TERMINAL: frozenset[str] = frozenset({"exited", "failed", "lost", "expired", "released", "refused"})
#: States in which the allocation holds capacity on a host and wants a container there
#: (`pulling`: placed, and its host is fetching the image first).
ACTIVE: frozenset[str] = frozenset({"placed", "pulling", "running"})
#: Active, with no container yet.
STARTING: frozenset[str] = frozenset({"placed", "pulling"})


#: The events that end an allocation.
TERMINAL_EVENTS = (
    AllocationExited,
    AllocationFailed,
    AllocationLost,
    AllocationExpired,
    AllocationReleased,
    AllocationRefused,
)


@dataclass(frozen=True)
class PullFailure:
    """A host the allocation was sent back from because it could not get the image, and why."""

    host_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class FrozenMark:
    """Its host's owner policy kept it frozen past the member's limit (AllocationFrozenTooLong)."""

    host_id: str
    #: When the host froze: one mark per freeze.
    frozen_since: datetime
    #: How long it had been frozen when it was marked, and the member's limit.
    frozen_s: float
    max_frozen_s: float
    marked_at: datetime


@dataclass(frozen=True)
class AllocationState:
    alloc_id: str
    user: str
    spec: AllocationSpec
    lifetime_s: float
    status: AllocationStatus = "pending"
    queue_timeout_s: float = 600.0
    constraints: dict[str, str] = field(default_factory=dict)
    host_id: str | None = None
    container_id: str | None = None
    expires_at: datetime | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    reason: str | None = None
    #: It exited because its host took the machine back (AllocationExited.by_host).
    exited_by_host: bool = False
    #: What the host said went wrong, when it failed (e.g. which image, which registry).
    detail: str | None = None
    #: How far the host's pull of the image came (bytes, as last logged); None: never pulled.
    pull_done_bytes: int | None = None
    pull_total_bytes: int | None = None
    #: When the last pull progress was logged (the allocator logs it at most every few seconds).
    pull_logged_at: datetime | None = None
    #: The hosts it was sent back from, oldest first: it is never placed on one of them again.
    pull_failures: tuple[PullFailure, ...] = ()
    #: Since when it waits to be placed: its request, or its last return from a host; its
    #: queue timeout counts from here.
    pending_since: datetime | None = None
    #: The last time its host kept it frozen too long (None: never).
    frozen_too_long: FrozenMark | None = None
    version: int = 0
    placed_position: int | None = None
    requested_at: datetime | None = None
    changed_at: datetime | None = None
    #: When its container started (AllocationRunning) and when it ended (its terminal event).
    started_at: datetime | None = None
    ended_at: datetime | None = None
    #: Its stopped container is kept until then (AllocationExited.kept_until); None once it
    #: is removed (AllocationDiscarded), or when it never was kept.
    kept_until: datetime | None = None
    #: A batch job's task (AllocationRequested): its job, its index and which attempt.
    job_id: str | None = None
    task_index: int | None = None
    attempt: int = 1

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def kept(self) -> bool:
        """Ended, and its stopped container is still kept on its host."""
        return self.kept_until is not None

    @property
    def failed_on(self) -> frozenset[str]:
        """Hosts it must not be placed on again."""
        return frozenset(f.host_id for f in self.pull_failures)


def evolve(
    state: AllocationState | None, event: Event, version: int, at: datetime, position: int = 0
) -> AllocationState | None:
    if not isinstance(event, AllocationEvent):
        return state
    if isinstance(event, AllocationRequested):
        return AllocationState(
            alloc_id=event.alloc_id,
            user=event.user,
            spec=event.spec,
            lifetime_s=event.lifetime_s,
            constraints=dict(event.constraints),
            version=version,
            requested_at=at,
            pending_since=at,
            changed_at=at,
            queue_timeout_s=event.queue_timeout_s,
            job_id=event.job_id,
            task_index=event.task_index,
            attempt=event.attempt,
        )
    if state is None:
        if isinstance(event, AllocationPlaced):
            # Placed without a request (tests and tools that place work directly).
            state = AllocationState(
                alloc_id=event.alloc_id,
                user=event.user,
                spec=event.spec,
                lifetime_s=0.0,
                requested_at=at,
            )
        else:
            return None
    if isinstance(event, AllocationDiscarded):
        return changed(state, version=version, changed_at=at, kept_until=None)
    if state.terminal and not isinstance(event, AllocationExtended):
        # Late reports (a container that exits after its release) change nothing.
        return changed(state, version=version, changed_at=at)
    # One copy per event: copying this many fields is most of a replay's time.
    changes = _changes(state, event, at, position)
    if isinstance(event, TERMINAL_EVENTS):
        changes["ended_at"] = at
    return changed(state, version=version, changed_at=at, **changes)


def _changes(state: AllocationState, event: AllocationEvent, at: datetime, position: int) -> dict[str, Any]:
    """The fields `event` changes in the live allocation `state` (besides its version and time)."""
    match event:
        case AllocationPlaced():
            return {
                "status": "placed",
                "host_id": event.host_id,
                "expires_at": event.expires_at,
                "placed_position": position,
            }
        case AllocationPulling():
            return {
                "status": "pulling",
                "pull_done_bytes": event.done_bytes,
                "pull_total_bytes": event.total_bytes,
                "pull_logged_at": at,
            }
        case AllocationPullProgressed():
            return {
                "pull_done_bytes": event.done_bytes,
                "pull_total_bytes": event.total_bytes,
                "pull_logged_at": at,
            }
        case AllocationUnplaced():
            if state.status not in ACTIVE or state.host_id != event.host_id:
                return {}
            failure = PullFailure(host_id=event.host_id, reason=event.reason, detail=event.detail)
            return {
                "status": "pending",
                "host_id": None,
                "container_id": None,
                "expires_at": None,
                "placed_position": None,
                "pull_done_bytes": None,
                "pull_total_bytes": None,
                "pull_logged_at": None,
                "pull_failures": (*state.pull_failures, failure),
                "pending_since": at,
            }
        case AllocationRunning():
            return {"status": "running", "container_id": event.container_id, "started_at": at}
        case AllocationRestarted():
            return {}  # still running, in the same container: it changes only the history
        case AllocationExited():
            return {
                "status": "exited",
                "exit_code": event.exit_code,
                "oom_killed": event.oom_killed,
                "kept_until": event.kept_until,
                "reason": event.reason,
                "exited_by_host": event.by_host,
            }
        case AllocationFailed():
            return {"status": "failed", "reason": event.reason, "detail": event.detail or None}
        case AllocationLost():
            return {"status": "lost", "reason": event.reason}
        case AllocationExpired():
            return {"status": "expired"}
        case AllocationReleased():
            return {"status": "released", "reason": event.reason or state.reason}
        case AllocationFrozenTooLong():
            if state.status not in ACTIVE or state.host_id != event.host_id:
                return {}
            mark = FrozenMark(
                host_id=event.host_id,
                frozen_since=event.frozen_since,
                frozen_s=event.frozen_s,
                max_frozen_s=event.max_frozen_s,
                marked_at=at,
            )
            return {"frozen_too_long": mark}
        case AllocationRefused():
            return {"status": "refused", "reason": event.reason, "detail": event.detail or None}
        case AllocationExtended():
            return {} if state.terminal else {"expires_at": event.expires_at}
    return {}


@dataclass
class AllocationsView:
    allocations: dict[str, AllocationState] = field(default_factory=dict)
    position: int = 0
    #: Each user's allocations, oldest request first (owner_index.py): follows from `allocations`.
    by_user: OwnerIndex = field(default_factory=OwnerIndex, compare=False, repr=False)
    #: The ids of the pending allocations: follows from `allocations`, so that the fair queue and
    #: a pending allocation's standing in it are found without a look at every allocation.
    pending_ids: set[str] = field(default_factory=set, compare=False, repr=False)
    #: The ids of the active allocations (ACTIVE) and of the ended ones whose stopped container
    #: is kept: follow from `allocations`, so that what the allocator looks at every round
    #: (expiry, freezes, kept containers due, a lost host's work) grows with what runs in the
    #: pool, not with everything it ever ran.
    active_ids: set[str] = field(default_factory=set, compare=False, repr=False)
    kept_ids: set[str] = field(default_factory=set, compare=False, repr=False)
    #: Each user's pending and active allocations (what counts against the user's quota), so
    #: that a quota check costs what the user holds, not the user's whole history.
    held_ids: dict[str, set[str]] = field(default_factory=dict, compare=False, repr=False)
    #: The log position of each user's latest placement, for the fair queue's turns (a user
    #: served last waits behind one who holds as little and was served before). Follows from
    #: the placements folded (a checkpoint keeps the whole view, this too); a view made from
    #: allocations alone knows those that still say where they were placed, not the ones
    #: undone since (AllocationUnplaced).
    last_placed: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    #: How many allocations are in each status: follows from `allocations`, so that the
    #: allocations gauge costs the number of statuses, not a look at every allocation.
    #: A plain dict: a checkpoint (potluck.events.checkpoints) names only the classes it allows.
    by_status: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for a in self.allocations.values():
            self.by_user.put(a.user, a.requested_at, a.alloc_id)
            self._index(a)
            self._count(a.status, 1)

    def _index(self, state: AllocationState) -> None:
        pending, active = state.status == "pending", state.status in ACTIVE
        indexes = ((self.pending_ids, pending), (self.active_ids, active), (self.kept_ids, state.kept))
        for ids, member in indexes:
            if member:
                ids.add(state.alloc_id)
            else:
                ids.discard(state.alloc_id)
        placed = state.placed_position
        if placed is not None and placed > self.last_placed.get(state.user, 0):
            self.last_placed[state.user] = placed
        if pending or active:
            self.held_ids.setdefault(state.user, set()).add(state.alloc_id)
        elif (held := self.held_ids.get(state.user)) is not None:
            held.discard(state.alloc_id)
            if not held:
                del self.held_ids[state.user]

    def apply(self, event: Event, *, position: int, version: int, at: datetime) -> AllocationState | None:
        if position <= self.position:
            return None
        self.position = position
        if not isinstance(event, AllocationEvent):
            return None
        old = self.allocations.get(event.alloc_id)
        new = evolve(old, event, version, at, position)
        if new is not None:
            if old is not None:
                self._count(old.status, -1)
            self._count(new.status, 1)
            self.allocations[event.alloc_id] = new
            self.by_user.put(new.user, new.requested_at, new.alloc_id)
            self._index(new)
        return new

    def forget(self, alloc_id: str) -> AllocationState | None:
        """Drop an ended allocation from the view (retention.py decides which, and when), with
        every index that names it; None when the view does not hold it. One still pending,
        active or keeping its container is never dropped: it is what the pool runs."""
        state = self.allocations.get(alloc_id)
        if state is None:
            return None
        assert state.terminal, f"allocation {alloc_id} is {state.status}: never dropped"
        assert not state.kept, f"allocation {alloc_id} keeps its container: never dropped"
        del self.allocations[alloc_id]
        self.by_user.remove(alloc_id)
        self._count(state.status, -1)
        return state

    def _count(self, status: str, change: int) -> None:
        now = self.by_status.get(status, 0) + change
        if now:
            self.by_status[status] = now
        else:
            del self.by_status[status]

    def pending(self) -> list[AllocationState]:
        """The pending allocations, in no particular order."""
        return [self.allocations[alloc_id] for alloc_id in self.pending_ids]

    def held_by(self, user: str) -> list[AllocationState]:
        """The user's pending and active allocations, in no particular order."""
        return [self.allocations[alloc_id] for alloc_id in self.held_ids.get(user, ())]

    def active(self) -> list[AllocationState]:
        """The active allocations (placed, pulling or running), in no particular order."""
        return [self.allocations[alloc_id] for alloc_id in self.active_ids]

    def kept(self) -> list[AllocationState]:
        """The ended allocations whose stopped containers are kept, in no particular order."""
        return [self.allocations[alloc_id] for alloc_id in self.kept_ids]

    def desired_for(self, host_id: str) -> list[AllocationState]:
        return sorted((a for a in self.active() if a.host_id == host_id), key=lambda a: a.alloc_id)

    def kept_on(self, host_id: str) -> list[AllocationState]:
        """Ended allocations whose stopped containers the host keeps (for results and logs)."""
        return sorted((a for a in self.kept() if a.host_id == host_id), key=lambda a: a.alloc_id)

    @classmethod
    def rebuild(cls, events: Iterable[tuple[Event, int, int, datetime]]) -> "AllocationsView":
        view = cls()
        for event, position, version, at in events:
            view.apply(event, position=position, version=version, at=at)
        return view
