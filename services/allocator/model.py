"""The allocator's read model: everything it decides on, folded from the log. Pure.

`AllocatorModel` is a `Projection` (potluck.events): it folds host events into
`HostsView`, the `capacity-<host>` streams into the `CapacityLedger`, the
`images-<host>` streams into what each host holds (`host_images`),
allocation events into `AllocationsView`, jobs into `JobsView` (and each job's tasks counted by
state into `JobTallies`, task_standing.py), users into `UsersView`, and keeps
the version of each user's `quota-<user>` stream. No asyncio, no I/O, no
decision: the allocator's engine feeds it through a `Fold` and decides on it,
and `potluck ops replay` feeds the very same class, so a replay shows exactly
what a running allocator holds.

An event the Fold cannot read still took a version of its stream
(`passed_over`): the model counts it in every version it keeps, or each later
append that expects that version would conflict forever.

The queries here answer from the model alone (what a user holds, the pool's
figures); what also depends on requests still in flight is in decisions.py.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar

from potluck.allocator.capacity import CapacityLedger
from potluck.allocator.conditions import frozen_past_limit
from potluck.allocator.members import MembersView
from potluck.allocator.placement_index import PlacementIndex
from potluck.allocator.schemas import CapacityFigures, Pool, PoolHost
from potluck.allocator.task_standing import JobTallies
from potluck.allocator.users import UsersView
from potluck.contracts.allocation_events import QuotaCharged
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import HostEvent
from potluck.contracts.host_images import HostImagesReported
from potluck.contracts.job_events import JobTaskRequested
from potluck.events import Event, RecordedEvent
from potluck.readmodels.allocations import AllocationState, AllocationsView
from potluck.readmodels.hosts import HostsView
from potluck.readmodels.jobs import JobState, JobsView
from potluck.readmodels.retention import Retirement

__all__ = ["CATEGORIES", "AllocatorModel", "figures", "passed_over"]

#: The stream categories the allocator folds.
CATEGORIES = frozenset({"host", "capacity", "alloc", "user", "quota", "images", "job", "member"})
_NOTHING: frozenset[str] = frozenset()

ZERO = Capacity.model_construct(cpus=0.0, memory_bytes=0, disk_bytes=0)


def figures(c: Capacity) -> CapacityFigures:
    return CapacityFigures(cpus=round(c.cpus, 6), memory=c.memory_bytes, disk=c.disk_bytes)


def passed_over(state: AllocationState | None, record: RecordedEvent) -> AllocationState | None:
    """An allocation after an event of its stream that could not be read: only its version moves."""
    return None if state is None else replace(state, version=record.version)


@dataclass
class AllocatorModel:
    categories: ClassVar[frozenset[str]] = CATEGORIES

    hosts: HostsView = field(default_factory=HostsView)
    ledger: CapacityLedger = field(default_factory=CapacityLedger)
    allocations: AllocationsView = field(default_factory=AllocationsView)
    jobs: JobsView = field(default_factory=JobsView)
    #: Each job's tasks by state, kept as the jobs' and their attempts' events are folded.
    job_tallies: JobTallies = field(default_factory=JobTallies)
    users: UsersView = field(default_factory=UsersView)
    #: Members' web tokens (the web page's "my machine").
    members: MembersView = field(default_factory=MembersView)
    #: Version of each user's `quota-<user>` stream, as folded.
    quota_versions: dict[str, int] = field(default_factory=dict)
    #: The images each host last reported holding (normalised names), and the version of its
    #: `images-<host>` stream.
    host_images: dict[str, frozenset[str]] = field(default_factory=dict)
    images_versions: dict[str, int] = field(default_factory=dict)
    #: What ended, waiting for the retention window to pass before it leaves (retention.py).
    retirement: Retirement = field(default_factory=Retirement)
    #: The Scheduler kept in step with what is folded here (placement_index.py); not state of
    #: its own: it follows from the hosts, the ledger and the images.
    placement: PlacementIndex = field(default_factory=PlacementIndex, compare=False, repr=False)

    # Folding.

    def apply(self, event: Event, record: RecordedEvent) -> None:
        at = record.recorded_at
        self.retirement.tick(at)
        self._fold(event, record, at)
        self._retire()

    def _fold(self, event: Event, record: RecordedEvent, at: datetime) -> None:
        match record.category:
            case "host":
                self.hosts.apply(event, position=record.position, version=record.version, at=at)
                if isinstance(event, HostEvent):
                    self.placement.touch(event.host_id)
            case "capacity":
                if self.ledger.apply(event, version=record.version):
                    self.placement.touch(getattr(event, "host_id", ""), reservation_only=True)
            case "alloc":
                was = self.allocations.allocations.get(getattr(event, "alloc_id", ""))
                state = self.allocations.apply(event, position=record.position, version=record.version, at=at)
                if state is not None:
                    self._attempt_changed(state.alloc_id)
                    if state.terminal and (was is None or not was.terminal):
                        self.retirement.ended("alloc", state.alloc_id)
            case "quota":
                if isinstance(event, QuotaCharged):
                    self.quota_versions[event.user] = record.version
            case "job":
                before = self.jobs.jobs.get(getattr(event, "job_id", ""))
                job = self.jobs.apply(event, version=record.version, at=at)
                if job is not None:
                    if job.terminal and (before is None or not before.terminal):
                        self.retirement.ended("job", job.job_id)
                    allocations = self.allocations.allocations
                    if isinstance(event, JobTaskRequested):
                        self.job_tallies.task_changed(job, event.task_index, allocations)
                    else:
                        self.job_tallies.job_changed(job, allocations)
            case "user":
                self.users.apply(event)
            case "member":
                self.members.apply(event)
            case "images":
                if isinstance(event, HostImagesReported):
                    self.host_images[event.host_id] = frozenset(event.images)
                    self.images_versions[event.host_id] = record.version
                    self.placement.touch(event.host_id)

    def _retire(self) -> None:
        """Drop what has been ended longer than the retention window (retention.py); what cannot
        leave yet (a kept container, a job with an attempt not over) is looked at again after
        another window."""
        retirement = self.retirement
        allocations = self.allocations.allocations
        for kind, row_id in retirement.due():
            if kind == "alloc":
                state = allocations.get(row_id)
                if state is None or (state.job_id is not None and state.job_id in self.jobs.jobs):
                    continue  # gone already, or a job's attempt: it leaves with its job
                if not state.terminal:
                    # Live again since it ended (a row the allocator never writes, put in the
                    # log by hand): not ended, so not dropped; it is queued again if it ends.
                    continue
                if state.kept:
                    retirement.ended("alloc", row_id)
                    continue
                self.allocations.forget(row_id)
                retirement.allocations_retired += 1
                continue
            job = self.jobs.jobs.get(row_id)
            if job is None:
                continue
            attempts = [a for a in (allocations.get(i) for i in job.alloc_ids()) if a is not None]
            if any(not a.terminal or a.kept for a in attempts):
                retirement.ended("job", row_id)
                continue
            for attempt in attempts:
                self.allocations.forget(attempt.alloc_id)
            retirement.allocations_retired += len(attempts)
            self.jobs.forget(row_id)
            self.job_tallies.tallies.pop(row_id, None)
            retirement.jobs_retired += 1

    def _attempt_changed(self, alloc_id: str) -> None:
        """After an event of an allocation: the task it is an attempt of, if any, is tallied again."""
        task = self.jobs.task_of.get(alloc_id)
        if task is not None:
            job_id, index = task
            self.job_tallies.task_changed(self.jobs.jobs[job_id], index, self.allocations.allocations)

    def passed_over(self, record: RecordedEvent) -> None:
        """An event of `record.stream` the Fold could not read: count its version."""
        _, _, stream_id = record.stream.partition("-")
        match record.category:
            case "host":
                self.hosts.passed_over(stream_id, version=record.version)
            case "capacity":
                self.ledger.passed_over(stream_id, version=record.version)
            case "alloc":
                alloc = passed_over(self.allocations.allocations.get(stream_id), record)
                if alloc is not None:
                    self.allocations.allocations[stream_id] = alloc
            case "quota":
                self.quota_versions[stream_id] = record.version
            case "job":
                job = self.jobs.jobs.get(stream_id)
                if job is not None:
                    self.jobs.jobs[stream_id] = replace(job, version=record.version)
            case "images":
                self.images_versions[stream_id] = record.version

    # Queries.

    def images_on(self, host_id: str) -> frozenset[str]:
        """What the host last reported holding (nothing, before its first report)."""
        return self.host_images.get(host_id, _NOTHING)

    def allocations_of(self, user: str, status: str | None = None) -> list[AllocationState]:
        """The user's allocations (in `status`, when given), oldest request first."""
        allocations = self.allocations.allocations
        found = (allocations[a] for a in self.allocations.by_user.ids(user))
        return [a for a in found if status is None or a.status == status]

    def allocations_page(
        self,
        user: str,
        status: str | None,
        after: str | None,
        limit: int,
        *,
        after_stored: AllocationState | None = None,
    ) -> tuple[list[AllocationState], str | None]:
        """Up to `limit` of `allocations_of(user, status)` after the allocation `after` (one of
        the user's), or after `after_stored` (one of the user's the model no longer holds, read
        from the log), and the `after` of the next page (None: the last)."""
        allocations = self.allocations.allocations
        key = None if after_stored is None else (after_stored.requested_at, after_stored.alloc_id)
        ids, following = self.allocations.by_user.page(
            user, after, limit, lambda a: status is None or allocations[a].status == status, after_key=key
        )
        return [allocations[a] for a in ids], following

    def jobs_page(self, user: str, after: str | None, limit: int) -> tuple[list[JobState], str | None]:
        """Up to `limit` of the user's jobs, oldest first, after the job `after` (one of the
        user's), and the `after` of the next page (None: the last)."""
        ids, following = self.jobs.by_user.page(user, after, limit)
        return [self.jobs.jobs[j] for j in ids], following

    def held_by(self, user: str) -> dict[str, Capacity]:
        """What the user holds or waits for (placed, running or pending), by allocation."""
        return {a.alloc_id: a.spec.resources for a in self.allocations.held_by(user)}

    def active_on(self, host_id: str) -> list[str]:
        """Allocations holding capacity on the host."""
        return [a.alloc_id for a in self.allocations.active() if a.host_id == host_id]

    def due(self, now: datetime) -> list[str]:
        """Active allocations whose lifetime has run out at `now`."""
        return [
            a.alloc_id for a in self.allocations.active() if a.expires_at is not None and a.expires_at <= now
        ]

    def frozen_too_long(self, now: datetime) -> list[str]:
        """Active allocations that a frozen host has kept frozen past its member's limit at `now`
        and that are not marked for this freeze yet (conditions.frozen_past_limit)."""
        frozen = {
            h.host_id: h
            for h in self.hosts.hosts.values()
            if h.policy == "frozen" and h.policy_max_frozen_s is not None
        }
        if not frozen:
            return []
        return sorted(
            a.alloc_id
            for a in self.allocations.active()
            if a.host_id in frozen and frozen_past_limit(a, frozen[a.host_id], now) is not None
        )

    def pending(self) -> list[AllocationState]:
        return self.allocations.pending()

    def pool(self) -> Pool:
        """Donated, reserved and free capacity of each host that donates, and in total."""
        rows = []
        donated_total = reserved_total = ZERO
        for host in sorted(self.hosts.hosts.values(), key=lambda h: h.host_id):
            if host.donated is None or host.admin == "deregistered":
                continue
            reserved = self.ledger.reserved(host.host_id)
            rows.append(
                PoolHost(
                    host_id=host.host_id,
                    name=host.name,
                    status=host.status,
                    labels=dict(host.labels),
                    donated=figures(host.donated),
                    reserved=figures(reserved),
                    free=figures(host.donated - reserved),
                )
            )
            donated_total = donated_total + host.donated
            reserved_total = reserved_total + reserved
        return Pool(
            hosts=rows,
            total={
                "donated": figures(donated_total),
                "reserved": figures(reserved_total),
                "free": figures(donated_total - reserved_total),
            },
        )
