"""What the pages show, as plain values folded from the allocator's model. Pure: no I/O, no clock.

Templates only lay these values out (and autoescape them); every figure and
every word of state is decided here, so it can be tested and benchmarked
without a server.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from potluck.allocator.model import AllocatorModel
from potluck.allocator.schemas import HistoryEntry
from potluck.contracts.capacity import Capacity
from potluck.contracts.event_facts import event_facts
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.hosts import HostState
from potluck.readmodels.jobs import JobState

__all__ = [
    "AllocationRow",
    "Bar",
    "HostRow",
    "JobRow",
    "MachineRow",
    "Moment",
    "PoolPage",
    "QueueRow",
    "allocation_rows",
    "job_rows",
    "machine_page",
    "pool_page",
    "timeline",
]


@dataclass(frozen=True)
class Bar:
    """One resource of a host or of the pool: what is donated and how much of it is reserved."""

    name: str
    used: str
    donated: str
    percent: int


@dataclass(frozen=True)
class HostRow:
    host_id: str
    name: str
    status: str
    why: str
    labels: tuple[tuple[str, str], ...]
    bars: tuple[Bar, ...]
    allocations: int
    #: The viewer's own allocations on it: others' ids are not theirs to see, only counted.
    mine: tuple[str, ...]


@dataclass(frozen=True)
class QueueRow:
    #: Empty unless the viewer's own: the queue shows who waits, not for which allocation.
    alloc_id: str
    user: str
    wants: str
    image: str
    since: str


@dataclass(frozen=True)
class PoolPage:
    hosts: tuple[HostRow, ...]
    totals: tuple[Bar, ...]
    queue: tuple[QueueRow, ...]
    position: int


@dataclass(frozen=True)
class AllocationRow:
    alloc_id: str
    user: str
    status: str
    host: str
    wants: str
    image: str
    expires: str
    active: bool
    #: Its command ended and its stopped container is kept until then ("" when it is not).
    kept_until: str = ""


def size(n: int) -> str:
    """Bytes the way people read them: 1.5G, 512M."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if value >= 10 or unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cpus(value: float) -> str:
    return f"{value:g}"


def when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"


def wants(c: Capacity) -> str:
    return f"{cpus(c.cpus)} CPU, {size(c.memory_bytes)} memory, {size(c.disk_bytes)} disk"


def _percent(used: float, donated: float) -> int:
    if donated <= 0:
        return 0
    return max(0, min(100, round(100 * used / donated)))


def bars(donated: Capacity | None, reserved: Capacity | None) -> tuple[Bar, ...]:
    d_cpu, d_mem, d_disk = (
        (donated.cpus, donated.memory_bytes, donated.disk_bytes) if donated else (0.0, 0, 0)
    )
    r_cpu, r_mem, r_disk = (
        (reserved.cpus, reserved.memory_bytes, reserved.disk_bytes) if reserved else (0.0, 0, 0)
    )
    return (
        Bar("CPU", cpus(round(r_cpu, 3)), cpus(round(d_cpu, 3)), _percent(r_cpu, d_cpu)),
        Bar("memory", size(r_mem), size(d_mem), _percent(r_mem, d_mem)),
        Bar("disk", size(r_disk), size(d_disk), _percent(r_disk, d_disk)),
    )


def why(host: HostState) -> str:
    """Why a host does not take work as usual, in the words its member or the allocator gave."""
    reasons = []
    if host.policy != "normal":
        cause = f" ({host.policy_cause})" if host.policy_cause else ""
        since = f" since {when(host.policy_since)}" if host.policy_since else ""
        reasons.append(
            f"{host.policy}{cause}{since}" + (f": {host.policy_reason}" if host.policy_reason else "")
        )
    if host.admin == "revoked" and host.revoked_reason:
        reasons.append(f"revoked: {host.revoked_reason}")
    if host.admin == "draining":
        reasons.append("draining: takes no new work, finishes what it runs")
    if host.liveness not in (None, "online") and host.liveness_since is not None:
        reasons.append(f"{host.liveness} since {when(host.liveness_since)}")
    return "; ".join(reasons)


def _shown_hosts(model: AllocatorModel) -> Iterable[HostState]:
    return sorted(
        (h for h in model.hosts.hosts.values() if h.registered or h.donated is not None),
        key=lambda h: (h.name, h.host_id),
    )


def pool_page(
    model: AllocatorModel, position: int, viewer: str | None = None, *, everyone: bool = False
) -> PoolPage:
    """Every host with its state and bars, the pool's totals and its fair queue, as `viewer` sees it."""
    active_on: dict[str, int] = {}
    mine_on: dict[str, list[str]] = {}
    pending = model.allocations.pending()
    for a in model.allocations.active():
        if a.host_id is not None:
            active_on[a.host_id] = active_on.get(a.host_id, 0) + 1
            if everyone or a.user == viewer:
                mine_on.setdefault(a.host_id, []).append(a.alloc_id)
    rows = []
    for host in _shown_hosts(model):
        reserved = model.ledger.reserved(host.host_id) if host.donated is not None else None
        rows.append(
            HostRow(
                host_id=host.host_id,
                name=host.name,
                status=_status(host),
                why=why(host),
                labels=tuple(sorted(host.labels.items())),
                bars=bars(host.donated, reserved),
                allocations=active_on.get(host.host_id, 0),
                mine=tuple(sorted(mine_on.get(host.host_id, ()))),
            )
        )
    queue = tuple(
        QueueRow(
            alloc_id=a.alloc_id if everyone or a.user == viewer else "",
            user=a.user,
            wants=wants(a.spec.resources),
            image=a.spec.image if everyone or a.user == viewer else "",
            since=when(a.pending_since or a.requested_at),
        )
        for a in sorted(pending, key=lambda a: (a.pending_since or a.requested_at or _never(), a.alloc_id))
    )
    donated_total, reserved_total = pool_totals(model)
    totals = (
        Bar(
            "CPU",
            cpus(round(reserved_total.cpus, 3)),
            cpus(round(donated_total.cpus, 3)),
            _percent(reserved_total.cpus, donated_total.cpus),
        ),
        Bar(
            "memory",
            size(reserved_total.memory),
            size(donated_total.memory),
            _percent(reserved_total.memory, donated_total.memory),
        ),
        Bar(
            "disk",
            size(reserved_total.disk),
            size(donated_total.disk),
            _percent(reserved_total.disk, donated_total.disk),
        ),
    )
    return PoolPage(hosts=tuple(rows), totals=totals, queue=queue, position=position)


def _status(host: HostState) -> str:
    # The owner policy's throttle or freeze matters more to a reader than "active".
    if host.status == "active" and host.policy != "normal":
        return host.policy
    return host.status


@dataclass(frozen=True)
class Amount:
    """CPU, memory and disk added up (Capacity cannot be zero)."""

    cpus: float = 0.0
    memory: int = 0
    disk: int = 0

    def plus(self, c: Capacity) -> "Amount":
        return Amount(self.cpus + c.cpus, self.memory + c.memory_bytes, self.disk + c.disk_bytes)


def pool_totals(model: AllocatorModel, only: frozenset[str] | None = None) -> tuple[Amount, Amount]:
    """What the pool's hosts (those in `only`, when given) donate and what of it is reserved:
    hosts that left, were revoked or deregistered count for neither."""
    donated = reserved = Amount()
    for host in model.hosts.hosts.values():
        if host.donated is None or host.gone or host.admin == "deregistered":
            continue
        if only is not None and host.host_id not in only:
            continue
        donated = donated.plus(host.donated)
        reserved = reserved.plus(model.ledger.reserved(host.host_id))
    return donated, reserved


def _never() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


def allocation_rows(
    model: AllocatorModel, allocations: Iterable[AllocationState]
) -> tuple[AllocationRow, ...]:
    """The allocations as a user's list shows them, newest request first."""
    ordered = sorted(allocations, key=lambda a: (a.requested_at is not None, a.requested_at), reverse=True)
    rows = []
    for a in ordered:
        host = model.hosts.hosts.get(a.host_id) if a.host_id else None
        rows.append(
            AllocationRow(
                alloc_id=a.alloc_id,
                user=a.user,
                status=a.status,
                host=host.name if host else (a.host_id or "-"),
                wants=wants(a.spec.resources),
                image=a.spec.image,
                expires=when(a.expires_at),
                active=not a.terminal,
                kept_until=when(a.kept_until) if a.kept_until is not None else "",
            )
        )
    return tuple(rows)


@dataclass(frozen=True)
class JobRow:
    job_id: str
    status: str
    tasks: int
    succeeded: int
    failed: int
    image: str
    submitted: str


def job_rows(jobs: Iterable[JobState]) -> tuple[JobRow, ...]:
    """A user's jobs, newest first."""
    return tuple(
        JobRow(
            job_id=j.job_id,
            status=j.status,
            tasks=j.spec.tasks,
            succeeded=j.succeeded,
            failed=j.failed,
            image=j.spec.task.image,
            submitted=when(j.submitted_at),
        )
        for j in sorted(jobs, key=lambda j: (j.submitted_at, j.job_id), reverse=True)
    )


@dataclass(frozen=True)
class Moment:
    """One event of an allocation's history, as its timeline shows it."""

    at: str
    what: str
    detail: str


def timeline(entries: Iterable[HistoryEntry]) -> tuple[Moment, ...]:
    """An allocation's events, oldest first, each with its facts but never its secrets (env)."""
    return tuple(
        Moment(at=when(entry.recorded_at), what=entry.type, detail=event_facts(entry.data))
        for entry in entries
    )


@dataclass(frozen=True)
class MachineRow:
    """A member's host: what the pool uses of it and where its owner policy stands."""

    host: HostRow
    policy: str
    share: str
    #: While frozen: how long it may stay so before its allocations' users are told. None while
    #: not frozen: the member's max_frozen_s reaches the pool only with HostFrozen, so any value
    #: then would be a guess (it read "no limit" under a policy of 3600 s).
    max_frozen: str | None


def machine_page(model: AllocatorModel, host_ids: Iterable[str]) -> tuple[MachineRow, ...]:
    """The member's hosts only; others' allocations on them are counted, never named."""
    wanted = set(host_ids)
    page = pool_page(model, 0)
    rows = []
    for row in page.hosts:
        if row.host_id not in wanted:
            continue
        host = model.hosts.hosts[row.host_id]
        share = (
            f"{cpus(round(host.policy_share_cpus, 3))} of {cpus(host.donated.cpus)} CPU"
            if host.policy_share_cpus is not None and host.donated is not None
            else "all it donates"
        )
        rows.append(MachineRow(host=row, policy=host.policy, share=share, max_frozen=_max_frozen(host)))
    return tuple(rows)


def _max_frozen(host: HostState) -> str | None:
    """The member's max_frozen_s as the pool knows it: from the HostFrozen of the freeze under
    way, and not at all otherwise (None: the page shows no line rather than a guess)."""
    if host.policy != "frozen":
        return None
    if host.policy_max_frozen_s is None:
        return "no limit"  # the member's `inf` travels as None: never told, truly no limit
    return f"{host.policy_max_frozen_s:g} s"
