"""Every read model of the pool, folded from the log alone: what `potluck ops replay` rebuilds.

`ReadModels` folds recorded events exactly as the services do, with the
services' own projections driven by the one `Fold` of potluck.events: the
allocator's `AllocatorModel` (hosts as the registry and the allocator keep
them, the capacity ledger, allocations, users, quota versions), the very
class a running allocator folds, plus the gateway's session audit
(`SessionsView`, here). The fold is deterministic: the same events give the
same state, so a rebuild compared with a running service's model shows any
drift.

Streams of categories no read model folds are skipped without decoding. An
event that cannot be decoded (unknown type, malformed data) is skipped as the
services skip it (the Fold's one policy), and every one is remembered in
`skipped` so that an operator sees it.

`canonical(...)` turns the models into plain JSON-able dicts in one canonical
form (sorted keys, ISO times, no token hashes, environment values redacted):
the form `ReadModels.to_dict()` gives, the form a live service answers with
(see potluck.ops.live), and the form the check compares.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from potluck.allocator.canonical import canonical as allocator_canonical
from potluck.allocator.canonical import iso
from potluck.allocator.capacity import CapacityLedger
from potluck.allocator.model import AllocatorModel
from potluck.allocator.users import UsersView
from potluck.contracts import allocation_events as _allocator_events  # noqa: F401 - registers the event types
from potluck.contracts import host_events as _registry_events  # noqa: F401 - registers the event types
from potluck.events import Event, EventStore, Fold, RecordedEvent, SkippedEvent
from potluck.readmodels.allocations import AllocationsView
from potluck.readmodels.hosts import HostsView
from potluck.readmodels.jobs import JobsView
from potluck.readmodels.retention import DEFAULT_RETENTION_S, Retirement
from potluck.sshgateway.events import SessionEnded, SessionStarted

__all__ = [
    "FOLDED_CATEGORIES",
    "PoolModel",
    "Progress",
    "ReadModels",
    "SessionState",
    "SessionsView",
    "SkippedEvent",
    "canonical",
    "count_by",
    "totals",
]

#: Called after each batch: (events folded so far, position reached, head of the log).
Progress = Callable[[int, int, int], None]

# --- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionState:
    session_id: str
    alloc_id: str
    user: str
    host_id: str | None
    kind: str
    command: str | None
    source: str
    gateway: str
    started_at: datetime
    ended_at: datetime | None = None
    reason: str | None = None
    exit_status: int | None = None
    exit_signal: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def open(self) -> bool:
        return self.ended_at is None


@dataclass
class SessionsView:
    """The gateway's audit as a read model: one entry per `session-<id>` stream."""

    sessions: dict[str, SessionState] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        match event:
            case SessionStarted():
                self.sessions[event.session_id] = SessionState(
                    session_id=event.session_id,
                    alloc_id=event.alloc_id,
                    user=event.user,
                    host_id=event.host_id,
                    kind=event.kind,
                    command=event.command,
                    source=f"{event.source_address}:{event.source_port}",
                    gateway=event.gateway,
                    started_at=event.started_at,
                )
            case SessionEnded():
                old = self.sessions.get(event.session_id)
                self.sessions[event.session_id] = SessionState(
                    session_id=event.session_id,
                    alloc_id=event.alloc_id,
                    user=old.user if old else "",
                    host_id=old.host_id if old else None,
                    kind=old.kind if old else "",
                    command=old.command if old else None,
                    source=old.source if old else "",
                    gateway=old.gateway if old else "",
                    started_at=event.started_at,
                    ended_at=event.ended_at,
                    reason=event.reason,
                    exit_status=event.exit_status,
                    exit_signal=event.exit_signal,
                    bytes_in=event.bytes_in,
                    bytes_out=event.bytes_out,
                )


# --- the fold ---------------------------------------------------------------------------------


class PoolModel:
    """Every read model as one projection: the allocator's own model and the gateway's audit."""

    categories: ClassVar[frozenset[str]] = AllocatorModel.categories | {"session"}

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.allocator = AllocatorModel(retirement=Retirement(retention_s=retention_s))
        self.sessions = SessionsView()

    def apply(self, event: Event, record: RecordedEvent) -> None:
        if record.category == "session":
            self.sessions.apply(event)
        else:
            self.allocator.apply(event, record)

    def passed_over(self, record: RecordedEvent) -> None:
        if record.category != "session":
            self.allocator.passed_over(record)


#: Stream categories some read model folds; the rest is skipped without decoding.
FOLDED_CATEGORIES = PoolModel.categories


class ReadModels:
    """Every read model of the pool, folded by one `Fold` (reader "replay") from the log alone."""

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S) -> None:
        """`retention_s`: how long what ended stays in the allocator's model (retention.py); the
        running allocator's own, for the replay to hold what it holds."""
        self.models = PoolModel(retention_s)
        #: Every event the replay could not read is kept, for the operator to see: `ops status`
        #: and `ops replay` list each beside their answer, so an error line each on stderr
        #: would only say it twice.
        self.fold = Fold(self.models, reader="replay", keep_skipped=None, log_skipped=False)
        #: When the last event folded was recorded, and how many events were folded (of any category).
        self.recorded_at: datetime | None = None
        self.folded = 0

    @property
    def hosts(self) -> HostsView:
        return self.models.allocator.hosts

    @property
    def ledger(self) -> CapacityLedger:
        return self.models.allocator.ledger

    @property
    def allocations(self) -> AllocationsView:
        return self.models.allocator.allocations

    @property
    def users(self) -> UsersView:
        return self.models.allocator.users

    @property
    def jobs(self) -> JobsView:
        return self.models.allocator.jobs

    @property
    def sessions(self) -> SessionsView:
        return self.models.sessions

    @property
    def position(self) -> int:
        """The last position folded (0: nothing yet)."""
        return self.fold.position

    @property
    def skipped(self) -> Sequence[SkippedEvent]:
        """The events that could not be read, in log order."""
        return tuple(self.fold.skipped.recent)

    def apply(self, record: RecordedEvent) -> None:
        """Fold one recorded event; events at or below `position` are ignored (replays are harmless)."""
        if record.position <= self.fold.position:
            return
        self.fold.apply(record)
        self.recorded_at = record.recorded_at
        self.folded += 1

    async def advance(
        self,
        store: EventStore,
        *,
        until_position: int | None = None,
        until_time: datetime | None = None,
        batch_size: int = 5000,
        progress: Progress | None = None,
        head: int | None = None,
    ) -> "ReadModels":
        """Fold the log after `position` up to `until_position` (inclusive) and/or up to the
        last event recorded at or before `until_time`; by default up to the head."""
        if head is None:
            head = await store.head_position()
        limit = head if until_position is None else min(until_position, head)
        while self.position < limit:
            batch = await store.read_all(self.position, batch_size, until_position=limit)
            if not batch:
                break
            for record in batch:
                if until_time is not None and record.recorded_at > until_time:
                    if progress is not None:
                        progress(self.folded, self.position, head)
                    return self
                self.apply(record)
            if progress is not None:
                progress(self.folded, self.position, head)
        # Positions have holes (rolled-back appends); the state "at" `limit` includes them.
        if until_time is None:
            self.fold.position = max(self.fold.position, limit)
        return self

    @classmethod
    async def rebuild(
        cls,
        store: EventStore,
        until_position: int | None = None,
        until_time: datetime | None = None,
        progress: Progress | None = None,
        *,
        batch_size: int = 5000,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> "ReadModels":
        """Every read model from the log alone, in batches, up to a position or a time (or the head)."""
        return await cls(retention_s).advance(
            store,
            until_position=until_position,
            until_time=until_time,
            batch_size=batch_size,
            progress=progress,
        )

    def to_dict(self) -> dict[str, Any]:
        return canonical(
            hosts=self.hosts,
            ledger=self.ledger,
            allocations=self.allocations,
            users=self.users,
            jobs=self.jobs,
            sessions=self.sessions,
        )


# --- the canonical form -----------------------------------------------------------------------


def _session_as_dict(s: SessionState) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "alloc_id": s.alloc_id,
        "user": s.user,
        "host_id": s.host_id,
        "kind": s.kind,
        "command": s.command,
        "source": s.source,
        "gateway": s.gateway,
        "state": "open" if s.open else "ended",
        "started_at": iso(s.started_at),
        "ended_at": iso(s.ended_at),
        "reason": s.reason,
        "exit_status": s.exit_status,
        "exit_signal": s.exit_signal,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
    }


def canonical(
    *,
    hosts: HostsView | None = None,
    ledger: CapacityLedger | None = None,
    allocations: AllocationsView | None = None,
    users: UsersView | None = None,
    jobs: JobsView | None = None,
    sessions: SessionsView | None = None,
) -> dict[str, Any]:
    """The models given, as plain data in the one form replay and live services share."""
    out = allocator_canonical(hosts=hosts, ledger=ledger, allocations=allocations, users=users, jobs=jobs)
    if sessions is not None:
        out["sessions"] = {s: _session_as_dict(sessions.sessions[s]) for s in sorted(sessions.sessions)}
    return out


def count_by(rows: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, int]:
    """How many rows have each value of `key`, sorted by value."""
    counts: dict[str, int] = {}
    for row in rows.values():
        value = str(row.get(key))
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def totals(capacity: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Sums of donated, reserved and free over every host of a canonical `capacity`."""
    out: dict[str, dict[str, Any]] = {}
    for part in ("donated", "reserved", "free"):
        cpus = 0.0
        memory = disk = 0
        for row in capacity.values():
            figures = row.get(part)
            if figures:
                cpus += figures["cpus"]
                memory += figures["memory_bytes"]
                disk += figures["disk_bytes"]
        out[part] = {"cpus": round(cpus, 6), "memory_bytes": memory, "disk_bytes": disk}
    return out
