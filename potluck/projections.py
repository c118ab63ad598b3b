"""Every read model of the pool, folded from the log alone: what `potluck ops replay` rebuilds.

`ReadModels` folds recorded events exactly as the services do, with the
services' own pure folds: hosts (`HostsView`, as the registry and the
allocator keep it), the capacity ledger (`CapacityLedger`), allocations
(`AllocationsView`) and users (`UsersView`), as `AllocatorEngine.apply` does,
plus the gateway's session audit (`SessionsView`, here). The fold is
deterministic: the same events give the same state, so a rebuild compared
with a running service's model shows any drift.

Streams of categories no read model folds are skipped without decoding. An
event that cannot be decoded (unknown type, malformed data) is skipped as the
services skip it, and remembered in `skipped` so that an operator sees it.

`canonical(...)` turns the models into plain JSON-able dicts in one canonical
form (sorted keys, ISO times, no token hashes, environment values redacted):
the form `ReadModels.to_dict()` gives, the form a live service answers with
(see potluck.ops.live), and the form the check compares.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from potluck.allocator import events as _allocator_events  # noqa: F401 - registers the event types
from potluck.allocator.capacity import CapacityLedger
from potluck.allocator.projection import AllocationState, AllocationsView
from potluck.allocator.users import UsersView
from potluck.events import Event, EventStore, RecordedEvent, SchemaError, registry
from potluck.registry import events as _registry_events  # noqa: F401 - registers the event types
from potluck.registry.events import Capacity
from potluck.registry.projection import HostsView, host_as_dict
from potluck.sshgateway.events import SessionEnded, SessionStarted

__all__ = [
    "FOLDED_CATEGORIES",
    "Progress",
    "ReadModels",
    "SessionState",
    "SessionsView",
    "SkippedEvent",
    "allocation_as_dict",
    "canonical",
    "capacity_as_dict",
    "count_by",
    "totals",
]

#: Stream categories some read model folds; the rest is skipped without decoding.
FOLDED_CATEGORIES = frozenset({"host", "capacity", "alloc", "user", "session"})

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


@dataclass(frozen=True)
class SkippedEvent:
    position: int
    stream: str
    type: str
    error: str


@dataclass
class ReadModels:
    hosts: HostsView = field(default_factory=HostsView)
    ledger: CapacityLedger = field(default_factory=CapacityLedger)
    allocations: AllocationsView = field(default_factory=AllocationsView)
    users: UsersView = field(default_factory=UsersView)
    sessions: SessionsView = field(default_factory=SessionsView)
    #: The last position folded (0: nothing yet), and when that event was recorded.
    position: int = 0
    recorded_at: datetime | None = None
    folded: int = 0
    skipped: list[SkippedEvent] = field(default_factory=list)

    def apply(self, record: RecordedEvent) -> None:
        """Fold one recorded event; events at or below `position` are ignored (replays are harmless)."""
        if record.position <= self.position:
            return
        self.position = record.position
        self.recorded_at = record.recorded_at
        self.folded += 1
        category = record.category
        if category not in FOLDED_CATEGORIES:
            return
        try:
            event = registry.decode_record(record)
        except SchemaError as exc:
            self.skipped.append(SkippedEvent(record.position, record.stream, record.type, str(exc)))
            return
        at = record.recorded_at
        if category == "host":
            self.hosts.apply(event, position=record.position, version=record.version, at=at)
        elif category == "capacity":
            self.ledger.apply(event, version=record.version)
        elif category == "alloc":
            self.allocations.apply(event, position=record.position, version=record.version, at=at)
        elif category == "user":
            self.users.apply(event)
        else:
            self.sessions.apply(event)

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
            self.position = max(self.position, limit)
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
    ) -> "ReadModels":
        """Every read model from the log alone, in batches, up to a position or a time (or the head)."""
        return await cls().advance(
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
            sessions=self.sessions,
        )


# --- the canonical form -----------------------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _figures(c: Capacity) -> dict[str, Any]:
    return {"cpus": round(c.cpus, 6), "memory_bytes": c.memory_bytes, "disk_bytes": c.disk_bytes}


def capacity_as_dict(hosts: HostsView, ledger: CapacityLedger) -> dict[str, dict[str, Any]]:
    """Per host with a donation or a capacity stream: donated, reserved, free, and who holds what."""
    rows: dict[str, dict[str, Any]] = {}
    for host_id in sorted(set(hosts.hosts) | set(ledger.host_ids())):
        host = hosts.hosts.get(host_id)
        donated = host.donated if host is not None and host.donated is not None else None
        if donated is None and not ledger.version(host_id):
            continue
        reserved = ledger.reserved(host_id)
        rows[host_id] = {
            "version": ledger.version(host_id),
            "donated": _figures(donated) if donated is not None else None,
            "reserved": _figures(reserved),
            "free": _figures(donated - reserved) if donated is not None else None,
            "holdings": {a: _figures(c) for a, c in sorted(ledger.holdings(host_id).items())},
        }
    return rows


def allocation_as_dict(state: AllocationState) -> dict[str, Any]:
    spec = state.spec
    return {
        "alloc_id": state.alloc_id,
        "user": state.user,
        "status": state.status,
        "host_id": state.host_id,
        "container_id": state.container_id,
        "resources": _figures(spec.resources),
        "image": spec.image,
        "command": list(spec.command) if spec.command is not None else None,
        # Values may be a user's secrets: the canonical form keeps only the names.
        "env": sorted(spec.env),
        "ssh_keys": len(spec.ssh_keys),
        "network": spec.network,
        "pids_limit": spec.pids_limit,
        "lifetime_s": state.lifetime_s,
        "constraints": dict(sorted(state.constraints.items())),
        "expires_at": _iso(state.expires_at),
        "exit_code": state.exit_code,
        "oom_killed": state.oom_killed,
        "reason": state.reason,
        "version": state.version,
        "requested_at": _iso(state.requested_at),
        "changed_at": _iso(state.changed_at),
    }


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
        "started_at": _iso(s.started_at),
        "ended_at": _iso(s.ended_at),
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
    sessions: SessionsView | None = None,
) -> dict[str, Any]:
    """The models given, as plain data in the one form replay and live services share."""
    out: dict[str, Any] = {}
    if hosts is not None:
        out["hosts"] = {h: host_as_dict(hosts.hosts[h]) for h in sorted(hosts.hosts)}
    if ledger is not None:
        out["capacity"] = capacity_as_dict(hosts or HostsView(), ledger)
    if allocations is not None:
        out["allocations"] = {
            a: allocation_as_dict(allocations.allocations[a]) for a in sorted(allocations.allocations)
        }
    if users is not None:
        out["users"] = {
            name: {"user": name, "quota": users.users[name].quota.model_dump(mode="json")}
            for name in sorted(users.users)
        }
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
