"""The allocator's decisions: state in, the appends that make them facts out. Pure.

Each function takes the model's values (and the time, where it matters) and
returns the `StreamAppend`s to write in one transaction, each stream with the
version it was decided on, or raises `Rejected` for the user. The engine
(engine.py) and the reactions (reactions.py) run them and append; a conflict
means the state was stale and the decision is made again.

`Outlook` is the model as the next decision must see it: the log's state plus
the requests queued for the log but not folded back yet (in_flight.py). Their
reservations count against their hosts, their requests against their users'
quotas, and each of their appends moves the version its stream will have.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from potluck.allocator.capacity import Placement, allocation_placed, placement_request
from potluck.allocator.conditions import frozen_past_limit
from potluck.allocator.in_flight import InFlightRequests, sum_of
from potluck.allocator.kept import discard
from potluck.allocator.lifecycle import pull_failed_everywhere
from potluck.allocator.model import AllocatorModel
from potluck.allocator.placement_index import in_flight_beyond
from potluck.allocator.scheduler import (
    NO_HOST_REGISTERED,
    NO_SCHEDULABLE_HOST,
    Decision,
    HostSnapshot,
    Impossible,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
)
from potluck.allocator.schemas import CreateAllocation
from potluck.contracts.allocation_events import (
    AllocationEvent,
    AllocationExpired,
    AllocationExtended,
    AllocationFrozenTooLong,
    AllocationLost,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationSpec,
    CapacityFreed,
    Quota,
    QuotaCharged,
    alloc_stream,
    capacity_stream,
    quota_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import HostDeregistered, HostLeft, HostLost, HostRevoked
from potluck.events import Event, StreamAppend
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import ACTIVE, AllocationState
from potluck.readmodels.hosts import HostState

__all__ = [
    "MAX_EXPIRY",
    "Outlook",
    "check_quota",
    "ending",
    "expiry",
    "extension",
    "frozen_too_long",
    "gone_reason",
    "loss",
    "loss_reason",
    "never_fits",
    "new_alloc_id",
    "placement",
    "refusal",
    "release",
    "request_appends",
    "requested",
    "timed_out",
]

#: How far ahead of now an allocation may be extended.
MAX_EXPIRY = timedelta(days=7)

Wanted = AllocationState | AllocationRequested


def new_alloc_id() -> str:
    return f"a-{uuid4().hex[:12]}"


# --- the model with the requests in flight ------------------------------------------------------


@dataclass(frozen=True)
class Outlook:
    """The model plus the requests in flight: what the next decision decides on."""

    model: AllocatorModel
    in_flight: InFlightRequests
    #: The pool registry's address (placement_request), None when the pool has none.
    pool_registry: str | None = None

    def in_flight_on(self, host_id: str) -> dict[str, Capacity]:
        """Reservations queued on the host that the ledger does not hold yet."""
        return in_flight_beyond(self.model.ledger, self.in_flight, host_id)

    def reservations(self) -> dict[str, Capacity]:
        """By host, what the requests in flight reserve there beyond the ledger."""
        hosts = {e.host_id for e in self.in_flight.of_all() if e.host_id is not None}
        return {host_id: sum_of(self.in_flight_on(host_id).values()) for host_id in hosts}

    def place(self, wanted: Wanted, strategy: Strategy) -> Decision:
        """Where `wanted` goes now: Placed, Wait or Impossible (scheduler.py), decided on the
        model's index brought up to date host by host (placement_index.py)."""
        return self._scheduler().place(self.request(wanted), strategy)

    def request(self, wanted: Wanted) -> PlacementRequest:
        """What placing `wanted` asks of the scheduler."""
        return placement_request(wanted, self.pool_registry)

    def snapshots(self) -> list[HostSnapshot]:
        """Every host as `place` decides on it (the scheduler's plain rule takes these)."""
        return self._scheduler().snapshots()

    def _scheduler(self) -> Scheduler:
        model = self.model
        return model.placement.current(model.hosts, model.ledger, model.host_images, self.in_flight)

    def capacity_version(self, host_id: str) -> int:
        """The version `capacity-<host_id>` will have once the reservations queued on it land."""
        return self.model.ledger.version(host_id) + len(self.in_flight_on(host_id))

    def quota_version(self, user: str) -> int:
        """The version `quota-<user>` will have once the user's requests in flight land.

        Each request charges its quota in the transaction that records it, before its
        allocation's events, so a request whose allocation is folded has been counted
        in `quota_versions` already.
        """
        allocations = self.model.allocations.allocations
        unfolded = sum(1 for e in self.in_flight.of_user(user) if e.alloc_id not in allocations)
        return self.model.quota_versions.get(user, 0) + unfolded

    def held_by(self, user: str) -> dict[str, Capacity]:
        """What the user holds, waits for or has in flight, by allocation (each counted once)."""
        held = {e.alloc_id: e.resources for e in self.in_flight.of_user(user)}
        held.update(self.model.held_by(user))
        return held


# --- a new request ------------------------------------------------------------------------------


def requested(user: str, alloc_id: str, body: CreateAllocation) -> AllocationRequested:
    """The request a user's HTTP body asks for."""
    spec = AllocationSpec(
        resources=Capacity(cpus=body.cpus, memory_bytes=body.memory, disk_bytes=body.disk),
        image=body.image,
        command=body.command,
        env=dict(body.env),
        ssh_keys=list(body.ssh_keys),
        network=body.network,
        on_preempt=body.on_preempt,
        keep_for_s=body.keep_for,
    )
    return AllocationRequested(
        alloc_id=alloc_id,
        user=user,
        spec=spec,
        lifetime_s=body.lifetime,
        constraints=dict(body.constraints),
        queue_timeout_s=body.queue_timeout,
    )


def check_quota(quota: Quota, held: dict[str, Capacity], wanted: Capacity) -> None:
    """Refuse a request that would take the user past `quota`, given what they `held` already."""
    if len(held) + 1 > quota.allocations:
        raise Rejected(
            "QUOTA_EXCEEDED",
            f"you hold {len(held)} allocations, your quota is {quota.allocations}; release one first",
            status=403,
        )
    cpus = sum(r.cpus for r in held.values()) + wanted.cpus
    # A float sum of CPU shares may land a hair above an exact quota.
    _within_quota("cpus", cpus > quota.cpus + 1e-9, f"{cpus:g} CPUs", f"{quota.cpus:g}")
    memory = sum(r.memory_bytes for r in held.values()) + wanted.memory_bytes
    _within_quota("memory", memory > quota.memory_bytes, f"{memory} bytes of memory", f"{quota.memory_bytes}")
    disk = sum(r.disk_bytes for r in held.values()) + wanted.disk_bytes
    _within_quota("disk", disk > quota.disk_bytes, f"{disk} bytes of disk", f"{quota.disk_bytes}")


def _within_quota(field: str, over: bool, would_hold: str, quota: str) -> None:
    if over:
        raise Rejected(
            "QUOTA_EXCEEDED",
            f"this would hold {would_hold}, your quota is {quota}",
            field=field,
            status=403,
        )


def placement(
    wanted: Wanted,
    host_id: str,
    *,
    now: datetime,
    alloc_version: int,
    capacity_version: int,
    preceding: Sequence[Event] = (),
) -> list[StreamAppend]:
    """Place `wanted` on the host: AllocationPlaced on its stream (after `preceding`), expecting
    `alloc_version`, and CapacityReserved on the host's, expecting `capacity_version`."""
    decided = Placement(allocation_placed(wanted, host_id, now), alloc_version, tuple(preceding))
    return [
        StreamAppend(alloc_stream(wanted.alloc_id), [*decided.preceding, decided.placed], alloc_version),
        StreamAppend(capacity_stream(host_id), [decided.reservation], capacity_version),
    ]


def request_appends(
    request: AllocationRequested,
    host_id: str | None,
    *,
    now: datetime,
    quota_version: int,
    capacity_version: int = 0,
) -> list[StreamAppend]:
    """A new request, placed on `host_id` at once or (None) left pending, charged to its user's quota.

    The quota's charge goes first in the transaction: see `Outlook.quota_version`.
    """
    charged = StreamAppend(
        quota_stream(request.user),
        [QuotaCharged(user=request.user, alloc_id=request.alloc_id)],
        quota_version,
    )
    if host_id is None:
        return [charged, StreamAppend(alloc_stream(request.alloc_id), [request], 0)]
    return [
        charged,
        *placement(
            request,
            host_id,
            now=now,
            alloc_version=0,
            capacity_version=capacity_version,
            preceding=[request],
        ),
    ]


# --- changes and ends of an allocation ---------------------------------------------------------


def ending(
    state: AllocationState, event: AllocationEvent, preceding: Sequence[AllocationEvent] = ()
) -> list[StreamAppend]:
    """`event` ends the allocation (after `preceding`, on its stream); one that held capacity
    frees it in the same transaction."""
    appends = [StreamAppend(alloc_stream(state.alloc_id), [*preceding, event], state.version)]
    if state.status in ACTIVE and state.host_id is not None:
        freed = CapacityFreed(host_id=state.host_id, alloc_id=state.alloc_id, amount=state.spec.resources)
        appends.append(StreamAppend(capacity_stream(state.host_id), [freed]))
    return appends


def release(state: AllocationState, by: str) -> list[StreamAppend]:
    """Release on a user's request; nothing to do for an allocation that has ended already,
    unless its stopped container is kept: then it is removed now, and its disk freed."""
    if state.terminal:
        return discard(state, f"released by {by}")
    return ending(state, AllocationReleased(alloc_id=state.alloc_id, host_id=state.host_id, by=by))


def extension(state: AllocationState, by_s: float, now: datetime) -> list[StreamAppend]:
    """Push the expiry `by_s` later, at most MAX_EXPIRY from `now`."""
    if state.terminal:
        raise Rejected(
            "ALREADY_ENDED", f"allocation {state.alloc_id} is {state.status}; it cannot be extended"
        )
    base = state.expires_at or now
    new_expiry = min(base + timedelta(seconds=by_s), now + MAX_EXPIRY)
    extended = AllocationExtended(alloc_id=state.alloc_id, expires_at=new_expiry)
    return [StreamAppend(alloc_stream(state.alloc_id), [extended], state.version)]


def loss(state: AllocationState, host_id: str, reason: str = "host lost") -> list[StreamAppend]:
    """The allocation is lost with its host, if it is still active there; its user is told `reason`."""
    if state.status not in ACTIVE or state.host_id != host_id:
        return []
    return ending(state, AllocationLost(alloc_id=state.alloc_id, host_id=host_id, reason=reason))


def frozen_too_long(state: AllocationState, host: HostState, now: datetime) -> list[StreamAppend]:
    """Mark an allocation its host has kept frozen past the member's `max_frozen_s` at `now`
    (once per freeze), and release it in the same append if it asked to be (`on_preempt`
    "release"); nothing when the host resumed in time or it was marked for this freeze."""
    frozen_s = frozen_past_limit(state, host, now)
    if frozen_s is None:
        return []
    assert host.policy_since is not None
    assert host.policy_max_frozen_s is not None
    marked = AllocationFrozenTooLong(
        alloc_id=state.alloc_id,
        host_id=host.host_id,
        frozen_since=host.policy_since,
        frozen_s=round(frozen_s, 3),
        max_frozen_s=host.policy_max_frozen_s,
    )
    if state.spec.on_preempt != "release":
        return [StreamAppend(alloc_stream(state.alloc_id), [marked], state.version)]
    released = AllocationReleased(
        alloc_id=state.alloc_id,
        host_id=host.host_id,
        by="policy",
        reason=(
            f"its host's owner policy kept it frozen {frozen_s:.0f}s, longer than the member allows "
            f"({host.policy_max_frozen_s:g}s), and it asked to be released then (on_preempt=release)"
        ),
    )
    return ending(state, released, preceding=[marked])


def loss_reason(event: Event) -> str | None:
    """Why a host event takes the host's allocations with it, in the words their users read;
    None: it does not."""
    match event:
        case HostLost():
            return "host lost"
        case HostDeregistered():
            return f"host deregistered by its {event.by}"
        case HostLeft():
            return "host left the pool"
        case HostRevoked():
            return f"host revoked by {event.by}" + (f": {event.reason}" if event.reason else "")
    return None


def gone_reason(host: HostState) -> str | None:
    """`loss_reason` read from a host's folded state rather than from the event that changed it
    (a model resumed from a checkpoint has the state only); None: the host is not gone. The state
    does not keep who deregistered a host, so that reason names no one."""
    if host.admin == "revoked":
        return f"host revoked by {host.revoked_by}" + (
            f": {host.revoked_reason}" if host.revoked_reason else ""
        )
    if host.admin == "left":
        return "host left the pool"
    if host.admin == "deregistered":
        return "host deregistered"
    if host.liveness == "lost":
        return "host lost"
    return None


def expiry(state: AllocationState, now: datetime) -> list[StreamAppend]:
    """The allocation expires, if it is active and its lifetime has run out at `now`."""
    if state.status not in ACTIVE or state.expires_at is None or state.expires_at > now:
        return []
    assert state.host_id is not None, "an active allocation has a host"
    return ending(state, AllocationExpired(alloc_id=state.alloc_id, host_id=state.host_id))


def refusal(state: AllocationState, reason: str, detail: str) -> list[StreamAppend]:
    """A pending request is refused for good."""
    refused = AllocationRefused(alloc_id=state.alloc_id, reason=reason, detail=detail)
    return [StreamAppend(alloc_stream(state.alloc_id), [refused], state.version)]


def queue_deadline(state: AllocationState) -> datetime | None:
    """When a request that waits has waited its queue timeout: counted from its request, or
    from its return from a host that could not get its image (None: it has no time to count
    from, and never times out)."""
    since = state.pending_since or state.requested_at
    return None if since is None else since + timedelta(seconds=state.queue_timeout_s)


def timed_out(
    state: AllocationState, now: datetime, waited_for: Callable[[], Decision] | None = None
) -> list[StreamAppend]:
    """The refusal of a pending request that has waited past its queue timeout at `now`, saying
    what it waited for: `waited_for` is what placing it would decide now, asked only when it is
    refused (a request constrained to a host its member paused read "no capacity freed", as if
    the host were full)."""
    deadline = queue_deadline(state)
    if state.status != "pending" or deadline is None or now <= deadline:
        return []
    within = f"{state.queue_timeout_s:g}s"
    decision = waited_for() if waited_for is not None else None
    detail = f"no capacity freed within {within}"
    if isinstance(decision, Wait) and decision.reason == NO_SCHEDULABLE_HOST:
        detail = (
            f"no host that could hold it took work within {within}: only hosts that are away, "
            "paused, draining or frozen by their owner, or whose Docker engine stopped answering, "
            "could hold it"
        )
    elif isinstance(decision, Wait) and decision.reason == NO_HOST_REGISTERED:
        detail = f"no host joined the pool within {within}"
    return refusal(state, "QUEUE_TIMEOUT", detail)


def never_fits(state: AllocationState, impossible: Impossible) -> list[StreamAppend]:
    """The end of a pending request that no host of the pool could ever hold any more: refused,
    or, when hosts already failed to get its image, failed with each of their reasons (the
    hosts left could not hold it, or there are none)."""
    if state.pull_failures:
        failed = pull_failed_everywhere(state, state.pull_failures)
        return [StreamAppend(alloc_stream(state.alloc_id), [failed], state.version)]
    return refusal(state, "NO_HOST_COULD_EVER_FIT", impossible.message)
