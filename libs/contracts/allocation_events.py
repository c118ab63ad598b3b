"""Facts about allocations (streams `alloc-<id>`), host reservations (streams `capacity-<host_id>`),
users (`user-<name>`) and what each user's requests count against their quota (`quota-<name>`).

Events that concern a host carry its id in `host_id`, which ends their bus
subject, so the host's hostd receives them through its own consumer.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from potluck.contracts.capacity import Capacity
from potluck.events import Event, event_type

#: See AllocationSpec.on_preempt.
OnPreempt = Literal["wait", "release"]
ON_PREEMPT: tuple[OnPreempt, ...] = ("wait", "release")


class AllocationSpec(BaseModel):
    """What the container must be: its image, limits and environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    resources: Capacity
    image: str = Field(min_length=1, max_length=512)
    command: list[str] | None = None
    #: Users' secrets: kept out of repr, so out of any log line or error that formats a spec.
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    ssh_keys: list[str] = Field(default_factory=list)
    network: bool = False
    pids_limit: int = Field(default=512, ge=16, le=65536)
    #: What happens when its host's owner policy keeps it frozen past the member's `max_frozen_s`:
    #: "wait" stays frozen until the host resumes (interactive work loses nothing), "release"
    #: ends it, so that its user can ask for capacity elsewhere.
    on_preempt: OnPreempt = "wait"
    #: Seconds its container is kept once it exited on its own (AllocationExited.kept_until),
    #: stopped, with its files and logs, for `potluck cp` and `potluck logs`; its disk stays
    #: reserved on the host until it is removed (AllocationDiscarded). 0: removed at once.
    keep_for_s: float = Field(default=0.0, ge=0, le=7 * 86400)


class AllocationEvent(Event):
    alloc_id: str


class HostAllocationEvent(AllocationEvent):
    routing_field = "host_id"
    host_id: str


@event_type
class AllocationRequested(AllocationEvent):
    user: str
    spec: AllocationSpec
    lifetime_s: float = Field(gt=0)
    constraints: dict[str, str] = Field(default_factory=dict)
    queue_timeout_s: float = Field(default=600.0, ge=0)
    #: Set for a task of a batch job (job_events.py): its job, its index and which attempt.
    job_id: str | None = None
    task_index: int | None = Field(default=None, ge=0)
    attempt: int = Field(default=1, ge=1)


@event_type
class AllocationPlaced(HostAllocationEvent):
    user: str
    spec: AllocationSpec
    expires_at: datetime


@event_type
class AllocationPulling(AllocationEvent):
    """The host it is placed on lacks its image and began pulling it.

    Not routed to the host (no routing field): the host already knows, it said so.
    """

    host_id: str
    image: str
    done_bytes: int = 0
    total_bytes: int = 0


@event_type
class AllocationPullProgressed(AllocationEvent):
    """How far the pull has come (logged at most every few seconds per allocation)."""

    host_id: str
    done_bytes: int
    total_bytes: int


@event_type
class AllocationRunning(HostAllocationEvent):
    container_id: str


@event_type
class AllocationRestarted(AllocationEvent):
    """Its container (an interactive allocation's) stopped without Potluck stopping it: its
    engine restarted, its machine rebooted, or its keep-alive was killed. Its host started the
    same container again: the files in it are as they were, the processes in it are not.

    Not routed to the host (no routing field): the host already knows, it did it.
    """

    host_id: str
    container_id: str
    exit_code: int
    oom_killed: bool = False


@event_type
class AllocationUnplaced(HostAllocationEvent):
    """The host could not get the image (its pull failed after its retries): the allocation
    leaves that host and waits to be placed again, never on a host it failed on before.

    Routed to the host, so its hostd drops the allocation (and any pull still going).
    """

    reason: str
    detail: str = ""


@event_type
class AllocationExited(HostAllocationEvent):
    exit_code: int
    oom_killed: bool = False
    #: Why its host stopped it, for its user ("host drained"); None: its command ended on its own.
    reason: str | None = None
    #: Its spec asked to keep the stopped container (keep_for_s): kept until then, its disk
    #: still reserved (CapacityRetained), and its host does not remove it on this event.
    kept_until: datetime | None = None
    #: Its host took the machine back from under it (a drain's grace ran out, or the member or
    #: their engine stopped it): nothing its command did, so a job re-queues it as it does an
    #: attempt lost with its host. False in events logged before it was recorded.
    by_host: bool = False


@event_type
class AllocationDiscarded(HostAllocationEvent):
    """A container kept after its exit (AllocationExited.kept_until) is removed now: its time
    was up, its user released it, or its job was removed. Routed to the host, which removes
    it; its disk is freed (CapacityFreed) in the same append."""

    reason: str = ""


@event_type
class AllocationFailed(AllocationEvent):
    host_id: str | None = None
    reason: str
    detail: str = ""
    # Routed to the host it failed on: hostd removes the container once the failure is logged.
    routing_field = "host_id"


@event_type
class AllocationLost(HostAllocationEvent):
    """Given up with its host: what the user is told is `reason` (e.g. why the host was revoked)."""

    reason: str = "host lost"


@event_type
class AllocationExpired(HostAllocationEvent):
    pass


@event_type
class AllocationReleased(AllocationEvent):
    """Ended on request: its user's (`by` "user:<name>"), or the allocator's own when the
    allocation asked for it (`by` "policy": frozen too long, see AllocationFrozenTooLong);
    `reason` is what its user is told (empty for a user's own release)."""

    host_id: str | None = None
    by: str
    reason: str = ""
    routing_field = "host_id"


@event_type
class AllocationFrozenTooLong(AllocationEvent):
    """Its host's owner policy has kept it frozen past the member's `max_frozen_s`.

    Recorded once per freeze of the host (`frozen_since`, when the host froze), for its
    user to see; what follows is the allocation's own choice (`on_preempt` of its spec).
    Not routed to the host: the host froze it and knows.
    """

    host_id: str
    frozen_since: datetime
    frozen_s: float = Field(ge=0)
    max_frozen_s: float = Field(gt=0)


@event_type
class AllocationExtended(AllocationEvent):
    expires_at: datetime


@event_type
class AllocationRefused(AllocationEvent):
    reason: Literal["QUEUE_TIMEOUT", "NO_HOST_COULD_EVER_FIT", "QUOTA_EXCEEDED"]
    detail: str = ""


@event_type
class CapacityReserved(Event):
    host_id: str
    alloc_id: str
    amount: Capacity


@event_type
class CapacityRetained(Event):
    """The allocation's work ended on the host, but its stopped container is kept
    (AllocationExited.kept_until): of what it held, only `disk_bytes` of disk stays reserved,
    until CapacityFreed."""

    host_id: str
    alloc_id: str
    disk_bytes: int = Field(ge=0)


@event_type
class CapacityFreed(Event):
    host_id: str
    alloc_id: str
    amount: Capacity


def alloc_stream(alloc_id: str) -> str:
    return f"alloc-{alloc_id}"


def capacity_stream(host_id: str) -> str:
    return f"capacity-{host_id}"


#: Writable disk one user may hold by default: ten allocations of the API's default 1 GiB, and
#: room to spare, far from the terabytes one user could once take.
DEFAULT_DISK_QUOTA = 64 << 30


class Quota(BaseModel):
    """The most one user may hold at once, all active allocations together."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    cpus: float = Field(default=8.0, gt=0)
    memory_bytes: int = Field(default=16 << 30, gt=0)
    allocations: int = Field(default=10, ge=1)
    #: Users added before disk had a quota get this default too when their UserAdded is read.
    disk_bytes: int = Field(default=DEFAULT_DISK_QUOTA, gt=0)


@event_type
class UserAdded(Event):
    """`token_sha256` is the hash of the user's bearer token; the token itself is never logged."""

    user: str
    token_sha256: str
    quota: Quota = Field(default_factory=Quota)


@event_type
class UserTokenRotated(Event):
    user: str
    token_sha256: str


@event_type
class UserRemoved(Event):
    """An operator took the user out of the pool (`by`: who, from $USER; `reason`: why, as the
    user's allocations and jobs are told): their token is refused from then on, and the
    allocator releases what they hold or wait for, cancels their jobs and removes the containers
    they keep. Their history stays in the log, and the name stays theirs: the operator's
    `ops users add` refuses it (another person given it would see that history and push to
    their registry namespace); UserRestored lets the same person back in. (A UserAdded of a
    removed name, which older operator commands recorded, is folded as a new user.)"""

    user: str
    by: str = ""
    reason: str = ""


@event_type
class UserRestored(Event):
    """An operator let a removed user back in (`by`: who, from $USER): the same person, who sees
    their history again, with a new token (`token_sha256`; the one they held when removed stays
    dead) and `quota`."""

    user: str
    token_sha256: str
    quota: Quota
    by: str = ""


@event_type
class UserQuotaChanged(Event):
    """The user's whole quota from now on. What they hold over a lowered one is kept; nothing new
    is placed for them until they are under it."""

    user: str
    quota: Quota


def user_stream(user: str) -> str:
    return f"user-{user}"


@event_type
class QuotaCharged(Event):
    """A request of `user` was checked against their quota and counts against it while active.

    Recorded in the request's own transaction, on `quota-<user>` with its expected
    version: two allocator replicas deciding requests of one user at once cannot
    both pass a quota that has room for only one; the second one's append conflicts
    and it decides again, seeing the first. What a user holds is read from the
    allocations themselves; this stream only orders the decisions.
    """

    user: str
    alloc_id: str


def quota_stream(user: str) -> str:
    return f"quota-{user}"
