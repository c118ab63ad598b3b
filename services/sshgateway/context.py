"""What the gateway's parts share: settings, the view of the log, the links, the audit, the sessions.

One `GatewayContext` per gateway, made by service.py and handed to the SSH
faces (server.py) and to every session (sessions.py); nothing in it is
global. `SessionRegistry` finds the sessions in progress on an allocation,
so that they can be ended when it stops running, and all of them when the
gateway stops; it knows sessions only as something with a login that can
be ended (`LiveSession`), so that it need not import the session itself.
"""

from dataclasses import dataclass, field
from typing import Protocol

import asyncssh

from potluck.kernel.background import BackgroundTasks
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.sshgateway.audit import AuditLog, LoginIdentity
from potluck.sshgateway.events import EndReason
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.session_caps import SessionCaps, UserConnections
from potluck.sshgateway.settings import GatewaySettings
from potluck.sshgateway.start_wait import StartWaits
from potluck.sshgateway.view_refresh import ViewRefresh

__all__ = ["GatewayContext", "LiveSession", "SessionRegistry"]


class LiveSession(Protocol):
    @property
    def session_id(self) -> str: ...

    @property
    def identity(self) -> LoginIdentity: ...

    @property
    def reads_logs(self) -> bool:
        """A `potluck-logs` session: its host ends it once the container's output is all sent."""
        ...

    def end(self, reason: EndReason, message: str) -> None:
        """End the session from the gateway's side, telling the user `message`."""


class SessionRegistry:
    """Sessions in progress, by allocation, so they can be ended when it stops running."""

    def __init__(self) -> None:
        self._by_alloc: dict[str, set[LiveSession]] = {}

    def add(self, session: LiveSession) -> None:
        self._by_alloc.setdefault(session.identity.alloc_id, set()).add(session)

    def remove(self, session: LiveSession) -> None:
        sessions = self._by_alloc.get(session.identity.alloc_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_alloc[session.identity.alloc_id]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_alloc.values())

    def of(self, alloc_id: str) -> list[LiveSession]:
        return list(self._by_alloc.get(alloc_id, ()))

    def find(self, alloc_id: str, session_id: str) -> LiveSession | None:
        return next((s for s in self.of(alloc_id) if s.session_id == session_id), None)

    def all(self) -> list[LiveSession]:
        return [s for sessions in self._by_alloc.values() for s in sessions]


@dataclass
class GatewayContext:
    settings: GatewaySettings
    view: GatewayView
    links: LinkPool
    audit: AuditLog
    #: Reads the log to its head before a key the view does not admit is refused.
    view_refresh: ViewRefresh
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    #: Sessions waiting for their allocation to start (start_wait.py), woken by the reactions.
    starts: StartWaits = field(default_factory=StartWaits)
    #: Sessions open per connection and per user (settings' max_sessions_per_*).
    caps: SessionCaps = field(init=False)
    #: Authenticated connections open per user (settings' max_connections_per_user).
    user_connections: UserConnections = field(init=False)
    #: Work started from callbacks (a session's opening, a connection's serving), cancelled at stop.
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    #: Users' connections, closed when the gateway stops.
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    stopping: bool = False
    #: This process's run id, recorded in its sessions' starts; None without a bus (no liveness
    #: entry, so no other gateway could tell whether it is alive: its sessions are never swept).
    run_id: str | None = None

    def __post_init__(self) -> None:
        self.caps = SessionCaps(
            per_connection=self.settings.max_sessions_per_connection,
            per_user=self.settings.max_sessions_per_user,
            rates=KeyRates(
                RatePolicy(per_s=self.settings.user_sessions_per_s, burst=self.settings.user_session_burst)
            ),
        )
        self.user_connections = UserConnections(per_user=self.settings.max_connections_per_user)
