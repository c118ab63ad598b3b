"""The sweep for sessions a lost gateway left open: every gateway ends them in the audit log.

A gateway killed with SIGKILL, or whose machine died, never writes the
`SessionEnded` of the sessions it carried. Every gateway with a bus sweeps for
them: at start, once its own run's entry is up (liveness.py), then every
`lost_sweep_s`, it looks up the entries of the runs that carry the open
sessions of its view (projection.py) and ends the sessions of each run it has
seen unchanged or absent for `run_lost_after_s` (gateway_runs.py decides) with
`SessionEnded(reason="GATEWAY_LOST")`: no byte counts (only the lost gateway
knew them), `started_at` from the start, `ended_at` now.

Several gateways may sweep the same session at once: each appends at the
stream's version 1 (right after `SessionStarted`) with an event id derived
from the session, so the log takes one end, and a sweeper whose append
conflicts, or whose view is behind a gateway that ended the session itself,
simply lost the race. A failed append is tried again at the next sweep, since
the session is still open in the view.
"""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from potluck.events import DuplicateEvent, EventStore, NewEvent, WrongExpectedVersion, event_id_for
from potluck.sshgateway.events import SessionEnded, session_stream
from potluck.sshgateway.gateway_runs import OpenSession, Sightings, lost_detail, observe, orphaned
from potluck.sshgateway.liveness import RunEntry
from potluck.sshgateway.projection import GatewayView

__all__ = ["LostSessionSweep"]

log = structlog.get_logger(__name__)

#: Derives the event id of a swept session's end; apart from the gateway's own ("sshgateway"),
#: so that a gateway cut off from the bus, still alive, finds its own end refused, not taken.
ID_SOURCE = "sshgateway-lost"


class LostSessionSweep:
    """Ends, in the log, the open sessions of gateway runs that stopped refreshing their entry."""

    def __init__(
        self,
        store: EventStore,
        view: GatewayView,
        entry: RunEntry,
        *,
        gateway: str,
        lost_after_s: float,
        interval_s: float,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.view = view
        self.entry = entry
        self.gateway = gateway
        self.lost_after_s = lost_after_s
        self.interval_s = interval_s
        self.timeout = timeout
        self.clock = clock
        self.seen: Sightings = {}

    async def run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> list[str]:
        """One look: the ids of the sessions whose end this sweep wrote."""
        own = self.entry.run_id
        sessions = list(self.view.open_sessions.values())
        runs = {s.gateway_run for s in sessions} - {own}
        try:
            async with asyncio.timeout(self.timeout):
                revisions = await self.entry.revisions(runs)
        except Exception as exc:
            # What was seen before a blind spot says nothing about it: start looking afresh.
            log.warning("gateway.sweep_failed", error=repr(exc))
            self.seen = {}
            return []
        now = self.clock()
        self.seen = observe(self.seen, revisions, now)
        lost = orphaned(sessions, self.seen, now=now, lost_after=self.lost_after_s, own_run=own)
        return [s.session_id for s in lost if await self._end(s)]

    async def _end(self, session: OpenSession) -> bool:
        event = SessionEnded(
            session_id=session.session_id,
            alloc_id=session.alloc_id,
            reason="GATEWAY_LOST",
            detail=lost_detail(session),
            started_at=session.started_at,
            ended_at=datetime.now(UTC),
        )
        new = NewEvent(
            event,
            event_id=event_id_for(ID_SOURCE, session.session_id, 1),
            metadata={"recorded_by": f"{self.gateway} run {self.entry.run_id}"},
        )
        try:
            async with asyncio.timeout(self.timeout):
                await self.store.append(session_stream(session.session_id), [new], expected_version=1)
        except (DuplicateEvent, WrongExpectedVersion):
            # Ended meanwhile: by its own gateway after all, or by another sweeper first.
            log.debug("gateway.session_already_ended", session_id=session.session_id)
            return False
        except Exception as exc:
            log.warning("gateway.session_lost_not_recorded", session_id=session.session_id, error=repr(exc))
            return False
        log.warning(
            "gateway.session_lost",
            session_id=session.session_id,
            alloc_id=session.alloc_id,
            gateway=session.gateway,
            run=session.gateway_run,
        )
        return True
