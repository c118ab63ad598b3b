"""Pure fold of host events into host state: the registry's read model.

The same events always give the same state; `HostsView.rebuild` from the log
alone equals the view a running registry keeps up to date.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostDrainStarted,
    HostEnrolled,
    HostEvent,
    HostLost,
    HostPaused,
    HostRecovered,
    HostRegistered,
    HostResumed,
    HostSuspected,
)
from potluck.events import Event

Liveness = Literal["online", "suspect", "lost"]
AdminState = Literal["active", "paused", "draining", "deregistered"]


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
    admin: AdminState = "active"
    liveness: Liveness | None = None
    drain_grace_s: float = 0.0
    changed_at: datetime | None = None

    @property
    def schedulable(self) -> bool:
        """May new work be placed here?"""
        return self.registered and self.admin == "active" and self.liveness == "online"

    @property
    def status(self) -> str:
        if not self.registered:
            return "deregistered" if self.admin == "deregistered" else "enrolled"
        if self.liveness != "online":
            return str(self.liveness)
        return "online" if self.admin == "active" else self.admin


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
    state = replace(state, version=version, changed_at=at)
    match event:
        case HostRegistered():
            return replace(
                state,
                registered=True,
                donated=event.donated,
                labels=dict(event.labels),
                allowed_images=tuple(event.allowed_images),
                allow_network=event.allow_network,
                engine=event.engine,
                hostd_version=event.hostd_version,
                ssh_host_key=event.ssh_host_key,
                admin="active" if state.admin == "deregistered" else state.admin,
                liveness="online",
            )
        case HostSuspected():
            return replace(state, liveness="suspect")
        case HostLost():
            return replace(state, liveness="lost")
        case HostRecovered():
            return replace(state, liveness="online")
        case HostPaused():
            return replace(state, admin="paused")
        case HostResumed():
            return replace(state, admin="active")
        case HostDrainStarted():
            return replace(state, admin="draining", drain_grace_s=event.grace_s)
        case HostDeregistered():
            return replace(state, admin="deregistered", registered=False, liveness=None)
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
        "hostd_version": state.hostd_version,
        "changed_at": state.changed_at.isoformat() if state.changed_at else None,
    }
