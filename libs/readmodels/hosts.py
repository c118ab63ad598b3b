"""Pure fold of host events into host state: the registry's read model.

The same events always give the same state; `HostsView.rebuild` from the log
alone equals the view a running registry keeps up to date.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from potluck.contracts.capacity import Capacity, bounded_donation
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostConnectionsCapped,
    HostDeregistered,
    HostDrainStarted,
    HostEngineLost,
    HostEngineReturned,
    HostEnrolled,
    HostEvent,
    HostFrozen,
    HostJoined,
    HostJoinTokenIssued,
    HostLeft,
    HostLost,
    HostPaused,
    HostRecovered,
    HostRegistered,
    HostResumed,
    HostRevoked,
    HostShareRestored,
    HostSleeping,
    HostSuspected,
    HostThrottled,
    HostWoke,
    PolicyCause,
)
from potluck.events import Event
from potluck.kernel.records import changed

#: online: beating. asleep: said it sleeps (or came back saying it slept). unreachable: silent,
#: cause unknown. lost: silent past the stranded grace; its allocations were given up.
Liveness = Literal["online", "asleep", "unreachable", "lost"]
#: left and revoked are for good: the host never registers again without a new enrollment.
AdminState = Literal["active", "paused", "draining", "deregistered", "left", "revoked"]
#: What the member's owner policy does to the pool's share here.
PolicyState = Literal["normal", "throttled", "frozen"]
#: Liveness states in which the host's allocations are kept, waiting for it.
WAITING: frozenset[str] = frozenset({"asleep", "unreachable"})


@dataclass(frozen=True)
class HostState:
    host_id: str
    name: str
    nkey: str
    version: int = 0
    registered: bool = False
    donated: Capacity | None = None
    labels: dict[str, str] = field(default_factory=dict)
    allowed_images: tuple[str, ...] = ()
    allow_network: bool = False
    engine: EngineFacts | None = None
    hostd_version: str = ""
    ssh_host_key: str = ""
    #: The contract its hostd last registered with (potluck.contracts.compatibility); None until
    #: it first registers: an enrolled host's hostd has spoken no contract yet.
    contract: int | None = None
    admin: AdminState = "active"
    liveness: Liveness | None = None
    drain_grace_s: float = 0.0
    #: When its drain started (HostDrainStarted): its grace counts from here.
    drain_started_at: datetime | None = None
    #: When its member paused it (HostPaused), while it is paused.
    paused_at: datetime | None = None
    #: Since when the host has its current liveness (the event that set it).
    liveness_since: datetime | None = None
    #: How long it last said it slept (HostWoke).
    slept_s: float | None = None
    policy: PolicyState = "normal"
    policy_cause: PolicyCause | None = None
    policy_reason: str = ""
    policy_since: datetime | None = None
    #: CPUs the pool keeps while throttled.
    policy_share_cpus: float | None = None
    #: While frozen: how long allocations may stay frozen before they are told (HostFrozen).
    policy_max_frozen_s: float | None = None
    #: The unredeemed join token (digest only), its throwaway NATS key and its expiry.
    join_token_sha256: str = ""
    join_nkey: str = ""
    join_expires_at: datetime | None = None
    #: The throwaway key of the token last redeemed, and when (HostJoined): the member reads the
    #: registry's answer on that identity, so the NATS users file keeps it a moment longer
    #: (potluck.registry.admitted_keys.joining_keys).
    spent_join_nkey: str = ""
    joined_at: datetime | None = None
    #: Who made it leave (HostLeft), and when: a machine its member took back keeps its key in
    #: the NATS users file a while (potluck.registry.admitted_keys.host_keys).
    left_by: str = ""
    left_at: datetime | None = None
    revoked_by: str = ""
    revoked_reason: str = ""
    #: The last cap on its NATS connections (HostConnectionsCapped): when the registry took its
    #: key out of the users file, until when, and how many connections the key held then.
    capped_at: datetime | None = None
    capped_until: datetime | None = None
    capped_connections: int = 0
    capped_limit: int = 0
    #: Its hostd runs but its Docker engine does not answer (HostEngineLost), since when, and
    #: what hostd said; HostEngineReturned ends it. Not schedulable meanwhile.
    engine_away: bool = False
    engine_away_since: datetime | None = None
    engine_away_detail: str = ""
    changed_at: datetime | None = None

    @property
    def schedulable(self) -> bool:
        """May new work be placed here? Never on a frozen host, nor on one whose Docker engine
        stopped answering (hostd could start nothing there), nor on one whose hostd speaks
        another contract than these services (it kept running while they were upgraded)."""
        return (
            self.registered
            and self.admin == "active"
            and self.liveness == "online"
            and self.policy != "frozen"
            and not self.engine_away
            and self.contract == CONTRACT_VERSION
        )

    def capped(self, now: datetime) -> bool:
        """Is its key out of the NATS users file at `now` for holding too many connections?"""
        return self.capped_until is not None and now < self.capped_until

    @property
    def gone(self) -> bool:
        """Left or revoked: nothing it sends is honoured until an operator enrolls it anew."""
        return self.admin in ("left", "revoked")

    @property
    def waiting(self) -> bool:
        """Asleep or unreachable: its allocations are kept and wait for it."""
        return self.registered and self.liveness in WAITING

    def drain_left_s(self, now: datetime) -> float | None:
        """While it drains: how much of its grace is left at `now` (0 once it is over);
        None when it does not drain. A hostd started mid-drain is given only this."""
        if self.admin != "draining":
            return None
        if self.drain_started_at is None:
            return self.drain_grace_s
        elapsed = (now - self.drain_started_at).total_seconds()
        return min(self.drain_grace_s, max(0.0, self.drain_grace_s - elapsed))

    @property
    def status(self) -> str:
        """One word among enrolled, active, paused, draining, asleep, unreachable, lost,
        deregistered, left, revoked."""
        if self.gone or not self.registered:
            return self.admin if self.admin in ("deregistered", "left", "revoked") else "enrolled"
        if self.liveness != "online":
            return str(self.liveness)
        return self.admin


#: The fold's own version, part of its snapshots' kind (potluck.events.snapshots): bump it
#: when a change to `evolve` makes a stream fold to another state than before.
#: 2: drain_started_at; 3: contract; 4: spent_join_nkey, joined_at; 5: left_by, left_at; 6: paused_at;
#: 7: contract None until the first registration;
#: 8: capped_at, capped_until, capped_connections, capped_limit;
#: 9: engine_away, engine_away_since, engine_away_detail.
HOST_FOLD_VERSION = 9


def evolve(state: HostState | None, event: Event, version: int, at: datetime) -> HostState | None:
    """One step of the fold. Events of other aggregates leave the state alone."""
    if not isinstance(event, HostEvent):
        return state
    if isinstance(event, HostEnrolled):
        return HostState(
            host_id=event.host_id, name=event.name, nkey=event.nkey, version=version, changed_at=at
        )
    if state is None:
        # A host event without enrollment cannot be decided by the aggregate; keep folding total.
        state = HostState(host_id=event.host_id, name=event.host_id, nkey="")
    state = changed(state, version=version, changed_at=at)
    return _evolve_host(state, event, at)


def _evolve_host(state: HostState, event: HostEvent, at: datetime) -> HostState:
    match event:
        case HostRegistered():
            return changed(
                state,
                registered=True,
                donated=bounded_donation(event.donated),
                labels=dict(event.labels),
                allowed_images=tuple(event.allowed_images),
                allow_network=event.allow_network,
                engine=event.engine,
                hostd_version=event.hostd_version,
                ssh_host_key=event.ssh_host_key,
                contract=event.contract,
                admin="active" if state.admin == "deregistered" else state.admin,
                liveness="online",
                liveness_since=at if state.liveness != "online" else state.liveness_since,
            )
        case HostSuspected():
            return changed(state, liveness="unreachable", liveness_since=at)
        case HostSleeping():
            return changed(state, liveness="asleep", liveness_since=at)
        case HostWoke():
            return changed(state, liveness="online", liveness_since=at, slept_s=event.slept_s)
        case HostLost():
            return changed(state, liveness="lost", liveness_since=at)
        case HostRecovered():
            return changed(state, liveness="online", liveness_since=at)
        case HostPaused():
            return changed(state, admin="paused", paused_at=at)
        case HostResumed():
            return changed(state, admin="active")
        case HostDrainStarted():
            return changed(state, admin="draining", drain_grace_s=event.grace_s, drain_started_at=at)
        case HostDeregistered():
            return changed(state, admin="deregistered", registered=False, liveness=None)
        case HostLeft():
            return changed(state, admin="left", registered=False, liveness=None, left_by=event.by, left_at=at)
        case HostRevoked():
            return changed(
                state,
                admin="revoked",
                registered=False,
                liveness=None,
                revoked_by=event.by,
                revoked_reason=event.reason,
                join_token_sha256="",
                join_nkey="",
                join_expires_at=None,
            )
        case HostJoinTokenIssued():
            return changed(
                state,
                join_token_sha256=event.token_sha256,
                join_nkey=event.join_nkey,
                join_expires_at=event.expires_at,
            )
        case HostJoined():
            return changed(
                state,
                nkey=event.nkey,
                join_token_sha256="",
                join_nkey="",
                join_expires_at=None,
                spent_join_nkey=state.join_nkey,
                joined_at=at,
            )
        case HostThrottled():
            return changed(
                state,
                policy="throttled",
                policy_cause=event.cause,
                policy_reason=event.reason,
                policy_since=at if state.policy != "throttled" else state.policy_since,
                policy_share_cpus=event.share_cpus,
            )
        case HostFrozen():
            return changed(
                state,
                policy="frozen",
                policy_cause=event.cause,
                policy_reason=event.reason,
                # Another cause keeping it frozen is the same freeze: max_frozen_s counts on.
                policy_since=at if state.policy != "frozen" else state.policy_since,
                policy_share_cpus=0.0,
                policy_max_frozen_s=event.max_frozen_s,
            )
        case HostConnectionsCapped():
            # Shut out of the bus from now on: unreachable at once, not only once its silence is
            # noticed (nothing is placed on it meanwhile); its first beat back recovers it.
            away = state.registered and state.liveness == "online"
            return changed(
                state,
                capped_at=at,
                capped_until=event.until,
                capped_connections=event.connections,
                capped_limit=event.limit,
                liveness="unreachable" if away else state.liveness,
                liveness_since=at if away else state.liveness_since,
            )
        case HostEngineLost():
            return changed(
                state,
                engine_away=True,
                # The same absence said again keeps its start: the engine is away since then.
                engine_away_since=state.engine_away_since if state.engine_away else at,
                engine_away_detail=event.detail,
            )
        case HostEngineReturned():
            return changed(state, engine_away=False, engine_away_since=None, engine_away_detail="")
        case HostShareRestored():
            return changed(
                state,
                policy="normal",
                policy_cause=None,
                policy_reason="",
                policy_since=at,
                policy_share_cpus=None,
                policy_max_frozen_s=None,
            )
    return state


@dataclass
class HostsView:
    hosts: dict[str, HostState] = field(default_factory=dict)
    position: int = 0

    def apply(self, event: Event, *, position: int, version: int, at: datetime) -> HostState | None:
        if position <= self.position:
            return None  # already folded: replays and redeliveries are harmless
        self.position = position
        if not isinstance(event, HostEvent):
            return None
        new = evolve(self.hosts.get(event.host_id), event, version, at)
        if new is not None:
            self.hosts[event.host_id] = new
        return new

    def passed_over(self, host_id: str, *, version: int) -> None:
        """An event of the host's stream that could not be read still took `version`: the host
        keeps it, as every reader folding that stream does (an append expects it, and `potluck ops
        replay --check` compares it)."""
        host = self.hosts.get(host_id)
        if host is not None and version > host.version:
            self.hosts[host_id] = changed(host, version=version)

    @classmethod
    def rebuild(cls, events: Iterable[tuple[Event, int, int, datetime]]) -> "HostsView":
        """From (event, position, version, recorded_at) tuples in log order."""
        view = cls()
        for event, position, version, at in events:
            view.apply(event, position=position, version=version, at=at)
        return view


def host_as_dict(state: HostState) -> dict[str, object]:
    """A host as operators and tests see it (event-derived fields only)."""
    return {
        "host_id": state.host_id,
        "name": state.name,
        "status": state.status,
        "admin": state.admin,
        "liveness": state.liveness,
        "registered": state.registered,
        "version": state.version,
        "donated": state.donated.model_dump() if state.donated else None,
        "labels": dict(state.labels),
        "allowed_images": list(state.allowed_images),
        "allow_network": state.allow_network,
        "engine": state.engine.model_dump() if state.engine else None,
        "hostd_version": state.hostd_version or None,
        "contract": state.contract,
        "liveness_since": _iso(state.liveness_since),
        "slept_s": state.slept_s,
        "policy": {
            "state": state.policy,
            "cause": state.policy_cause,
            "reason": state.policy_reason,
            "since": _iso(state.policy_since),
            "share_cpus": state.policy_share_cpus,
        },
        "revoked": {"by": state.revoked_by, "reason": state.revoked_reason}
        if state.admin == "revoked"
        else None,
        "drain": _drain(state),
        "connections_capped": _capped(state),
        "engine_away": engine_away(state),
        "changed_at": _iso(state.changed_at),
    }


#: What a host's engine being away means, for its member, the operator and its users alike.
ENGINE_AWAY_MEANS = (
    "hostd runs, but the machine's Docker engine stopped answering: nothing new is placed here "
    "and the pool's containers here may have stopped with it; when the engine answers again, "
    "the host takes work again, and hostd starts interactive allocations' containers again "
    "(a task that stopped ends, stopped on its host)"
)


def engine_away(state: HostState) -> dict[str, object] | None:
    """While its hostd reports its Docker engine away (HostEngineLost): since when, what hostd
    said, and what it means (None while the engine answers)."""
    if not state.engine_away:
        return None
    return {
        "since": _iso(state.engine_away_since),
        "detail": state.engine_away_detail,
        "means": ENGINE_AWAY_MEANS,
    }


def _capped(state: HostState) -> dict[str, object] | None:
    """The last cap on its NATS connections: while `until` is ahead, the host cannot reach the
    bus (its key is out of the users file), which is why it reads as unreachable meanwhile."""
    if state.capped_until is None:
        return None
    return {
        "at": _iso(state.capped_at),
        "until": _iso(state.capped_until),
        "connections": state.capped_connections,
        "limit": state.capped_limit,
        "why": f"its NATS key held {state.capped_connections} connections (a host may hold "
        f"{state.capped_limit}): the registry shut it out of NATS until {_iso(state.capped_until)}",
    }


def _drain(state: HostState) -> dict[str, object] | None:
    """While it drains: its grace, and when it started and ends (what still runs is stopped
    then); the member reads here when the machine is theirs again."""
    if state.admin != "draining":
        return None
    started = state.drain_started_at
    return {
        "grace_s": state.drain_grace_s,
        "started_at": _iso(started),
        "ends_at": _iso(started + timedelta(seconds=state.drain_grace_s) if started else None),
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
