"""The gateway's read model, folded from the log alone: allocations, and hosts' SSH keys.

Allocations fold exactly as the allocator's (`AllocationsView`, reused). For
hosts the gateway needs only one thing the registry's `HostState` does not
keep: the public SSH host key each hostd sent when it registered
(`HostRegistered.ssh_host_key`), which is how a reverse connection from a
laptop is mapped to its host id. A key belongs to the first registered host
that presented it; another host registering the same key is ignored until the
first one deregisters (so a member who copies a state directory to a second
machine cannot take over the first one's sessions). A deregistered, left or
revoked host's key is forgotten (its links are refused from then on); a lost
host keeps its key, since it may come back.

Allocations ended longer than the retention window ago (24 hours, on the log's clock) leave
the view as they leave the allocator's model (potluck.readmodels.retention), or the gateway's
memory would grow with every allocation the pool ever ran: a login to one of them is refused as
to an allocation that never was, which it cannot serve either way.

Users: the view keeps the names of the users an operator removed (`removed_users`, from the
`user` streams; a name restored, or added again in an older log, leaves it): a login to an
allocation of theirs is refused from the moment the removal is folded, before the allocator
has released it.

Sessions: the view keeps the sessions that some gateway run started and
none has ended yet (`open_sessions`, from the `session` streams), which the
sweep for lost gateways looks through (gateway_runs.py); sessions recorded
without a run are not kept.

Keys are compared by their wire blob (`key_blob`): the algorithm name is part
of it, comments and spacing are not.

`GatewayView` is a `potluck.events.Projection` (`categories`, `apply`), so a
`Fold` can feed it; `fold` is the same step saying what it changed, which
the gateway needs in order to react (reactions.py ends sessions, closes
links). The view itself decides nothing and does no I/O.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from potluck.contracts.allocation_events import AllocationEvent, UserAdded, UserRemoved, UserRestored
from potluck.contracts.host_events import HostDeregistered, HostLeft, HostRegistered, HostRevoked
from potluck.events import Event, RecordedEvent
from potluck.kernel.ssh_wire import public_key_blob
from potluck.readmodels.allocations import AllocationState, AllocationsView
from potluck.readmodels.retention import Retirement, retire_ended
from potluck.sshgateway.events import SessionEnded, SessionStarted
from potluck.sshgateway.gateway_runs import OpenSession

__all__ = ["Change", "GatewayView", "HostKeyConflict", "key_blob"]


def key_blob(line: str) -> bytes | None:
    """The wire blob of an OpenSSH public key line (`ssh-ed25519 AAAA... comment`), or None
    (potluck.kernel.ssh_wire.public_key_blob says why not, which nothing here needs)."""
    try:
        return public_key_blob(line)
    except ValueError:
        return None


@dataclass(frozen=True)
class HostKeyConflict:
    """A host registered a key that already belongs to another host (ignored)."""

    host_id: str
    owner: str


#: What folding one event changed: an allocation (its new state), a refused key, or nothing.
Change = AllocationState | HostKeyConflict | None


@dataclass
class GatewayView:
    """The gateway's read model; a `potluck.events.Projection` of the `alloc`, `host`, `session`
    and `user` streams."""

    categories: ClassVar[frozenset[str]] = frozenset({"alloc", "host", "session", "user"})

    allocations: AllocationsView = field(default_factory=AllocationsView)
    host_keys: dict[str, bytes] = field(default_factory=dict)
    key_owner: dict[bytes, str] = field(default_factory=dict)
    #: Sessions started by a gateway run and not ended, by session id.
    open_sessions: dict[str, OpenSession] = field(default_factory=dict)
    #: The users an operator removed and nobody added again.
    removed_users: set[str] = field(default_factory=set)
    position: int = 0
    #: What ended, waiting for the retention window to pass before it leaves.
    retirement: Retirement = field(default_factory=Retirement)

    def apply(self, event: Event, record: RecordedEvent) -> None:
        """Fold one event of the log (the Projection protocol); `fold` says what it changed."""
        self.fold(event, position=record.position, version=record.version, at=record.recorded_at)

    def fold(self, event: Event, *, position: int, version: int, at: datetime) -> Change:
        """Fold one event; returns the allocation it changed, or a key conflict, or None.

        Events at or before `position` were folded already and change nothing."""
        if position <= self.position:
            return None
        self.position = position
        self.retirement.tick(at)
        if isinstance(event, AllocationEvent):
            was = self.allocations.allocations.get(event.alloc_id)
            state = self.allocations.apply(event, position=position, version=version, at=at)
            if state is not None and state.terminal and (was is None or not was.terminal):
                self.retirement.ended("alloc", state.alloc_id)
            retire_ended(self.allocations, self.retirement)
            return state
        self.allocations.position = position
        retire_ended(self.allocations, self.retirement)
        if isinstance(event, HostRegistered):
            return self._registered(event.host_id, str(getattr(event, "ssh_host_key", "") or ""))
        if isinstance(event, HostDeregistered | HostLeft | HostRevoked):
            self._forget(event.host_id)
        elif isinstance(event, SessionStarted) and event.gateway_run is not None:
            self.open_sessions[event.session_id] = OpenSession(
                session_id=event.session_id,
                alloc_id=event.alloc_id,
                gateway=event.gateway,
                gateway_run=event.gateway_run,
                started_at=event.started_at,
            )
        elif isinstance(event, SessionEnded):
            self.open_sessions.pop(event.session_id, None)
        elif isinstance(event, UserRemoved):
            self.removed_users.add(event.user)
        elif isinstance(event, UserAdded | UserRestored):
            self.removed_users.discard(event.user)
        return None

    def _forget(self, host_id: str) -> None:
        old = self.host_keys.pop(host_id, None)
        if old is not None and self.key_owner.get(old) == host_id:
            del self.key_owner[old]

    def _registered(self, host_id: str, line: str) -> HostKeyConflict | None:
        blob = key_blob(line) if line else None
        if blob is None:
            # Registered without a (valid) key: an older hostd, or no gateways configured.
            self._forget(host_id)
            return None
        owner = self.key_owner.get(blob)
        if owner is not None and owner != host_id:
            return HostKeyConflict(host_id=host_id, owner=owner)
        self._forget(host_id)
        self.host_keys[host_id] = blob
        self.key_owner[blob] = host_id
        return None

    def host_for_key(self, blob: bytes) -> str | None:
        return self.key_owner.get(blob)

    def allocation(self, alloc_id: str) -> AllocationState | None:
        return self.allocations.allocations.get(alloc_id)

    def admitted(self, alloc_id: str) -> AllocationState | None:
        """The allocation, unless the user it belongs to was removed (None then too)."""
        state = self.allocations.allocations.get(alloc_id)
        return None if state is None or state.user in self.removed_users else state
