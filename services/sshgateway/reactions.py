"""What the gateway does when the log changes what it knows.

The gateway's `Fold` (service.py) feeds `GatewayReactions`, a projection
that folds each event into the view (projection.py) and then acts on what
changed:

- sessions waiting for an allocation to start (start_wait.py) are woken
  when it changes;
- an allocation that stops running (released, expired, lost...) ends its
  sessions, each with a message saying why; one that exited with its
  container kept keeps them (they read its logs and files) until it is
  discarded, and a `potluck-logs` session is left to end at its host, which
  ends it once it has sent the last of the container's output;
- a user an operator removes has every session of theirs ended at once, before
  the allocator releases their allocations (and no login of theirs is let in);
- a host that deregisters, leaves, is revoked, or registers with another key,
  has its idle links closed: they were authenticated with the key it no
  longer has (a revoked host's sessions end with its allocations, lost);
- a host registering a key that another host holds is logged (the view
  ignores it);
- a session of this gateway's that another gateway recorded as GATEWAY_LOST
  (this one was cut off from the bus for longer than `run_lost_after_s`)
  ends here too: the log says it ended, so no byte may flow after that.

Events the gateway cannot read never get here: the `Fold` skips them, counts
them and logs `events.skipped_unreadable`, and the gateway goes on serving.
"""

import structlog

from potluck.contracts.allocation_events import AllocationDiscarded, UserRemoved
from potluck.contracts.host_events import HostDeregistered, HostLeft, HostRegistered, HostRevoked
from potluck.events import Event, RecordedEvent
from potluck.readmodels.allocations import AllocationState
from potluck.sshgateway.context import SessionRegistry
from potluck.sshgateway.events import SessionEnded
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.projection import GatewayView, HostKeyConflict
from potluck.sshgateway.sessions import reachable
from potluck.sshgateway.start_wait import StartWaits

__all__ = ["GatewayReactions"]

log = structlog.get_logger(__name__)


class GatewayReactions:
    """The view, folded, and the gateway's reactions to its changes; a Projection for a Fold."""

    categories = GatewayView.categories

    def __init__(
        self, view: GatewayView, sessions: SessionRegistry, links: LinkPool, starts: StartWaits | None = None
    ) -> None:
        self.view = view
        self.sessions = sessions
        self.links = links
        self.starts = starts if starts is not None else StartWaits()

    def apply(self, event: Event, record: RecordedEvent) -> None:
        host_id = getattr(event, "host_id", None)
        key_before = self.view.host_keys.get(host_id) if isinstance(host_id, str) else None
        change = self.view.fold(
            event, position=record.position, version=record.version, at=record.recorded_at
        )
        if isinstance(change, AllocationState):
            self.starts.changed(change.alloc_id)
            self._allocation_changed(change, discarded=isinstance(event, AllocationDiscarded))
        elif isinstance(change, HostKeyConflict):
            log.warning(
                "gateway.host_key_conflict",
                host_id=change.host_id,
                owner=change.owner,
                hint="two hosts registered the same SSH key (a copied state_dir?); the second is ignored",
            )
        if (
            isinstance(event, HostRegistered | HostDeregistered | HostLeft | HostRevoked)
            and key_before is not None
            and self.view.host_keys.get(event.host_id) != key_before
        ):
            self.links.close_host(event.host_id)
        if isinstance(event, SessionEnded) and event.reason == "GATEWAY_LOST":
            self._declared_lost(event)
        if isinstance(event, UserRemoved):
            self._user_removed(event.user)
        if isinstance(event, HostRevoked):
            # Stolen or compromised: not even a link carrying a session stays open.
            self.links.sever_host(event.host_id)
            log.warning("gateway.host_revoked", host_id=event.host_id, by=event.by, reason=event.reason)

    def _allocation_changed(self, allocation: AllocationState, *, discarded: bool = False) -> None:
        if reachable(allocation):
            return
        ended_by_itself = allocation.status in ("exited", "failed") and not discarded
        for session in self.sessions.of(allocation.alloc_id):
            # A `potluck-logs` session's host ends it once the container's output is all sent
            # (the engine's log stream ends when the container stops): ending it here on the
            # exit could cut the end.
            if ended_by_itself and session.reads_logs:
                continue
            message = (
                f"allocation {allocation.alloc_id}'s kept container was removed; the session ended"
                if discarded
                else f"allocation {allocation.alloc_id} is now {allocation.status}; the session ended"
            )
            session.end("ALLOCATION_ENDED", message)

    def _user_removed(self, user: str) -> None:
        ended = 0
        for alloc_id in list(self.view.allocations.by_user.ids(user)):
            for session in self.sessions.of(alloc_id):
                session.end(
                    "ALLOCATION_ENDED", "your user was removed by the pool's operator; the session ended"
                )
                ended += 1
        log.warning("gateway.user_removed", user=user, sessions_ended=ended)

    def _declared_lost(self, event: SessionEnded) -> None:
        session = self.sessions.find(event.alloc_id, event.session_id)
        if session is None:  # not this gateway's, or over already
            return
        log.warning("gateway.own_session_declared_lost", session_id=event.session_id, detail=event.detail)
        session.end(
            "GATEWAY_LOST",
            "this gateway was out of touch with the pool for too long and the session was recorded "
            "as ended; connect again",
        )
