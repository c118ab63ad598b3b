"""Which open sessions a lost gateway left behind: pure, no I/O, no clock of its own.

Each gateway process has a run id, recorded in its sessions' `SessionStarted`
(events.py), and keeps an entry for it on the bus, refreshed every few seconds
(liveness.py). A sweeping gateway (gateway_sweep.py) looks up, at each sweep,
the entry of every run that carries an open session: its revision, or None
when there is none. A run is lost once the sweeper has seen its entry
unchanged, or absent, for `lost_after` seconds of the sweeper's own monotonic
clock (`observe`, then `orphaned`).

Why the sweeper's own observation and not a time in the entry or the
entry's expiry: no two machines' clocks are compared, and a bus that was down
(or restarted and lost its entries) makes nobody lost by itself: the clock
starts again from the sweeper's first look after it, and live gateways
refresh their entries well within `lost_after`. A sweeper that could not look
up every run forgets what it saw (`Sightings()`), for the same reason.

A sweeper never declares its own run lost, and sessions without a run (older
events, a gateway without a bus) are never here (`OpenSession` needs one).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = ["OpenSession", "Sighting", "Sightings", "lost_detail", "observe", "orphaned"]


@dataclass(frozen=True)
class OpenSession:
    """A session started by some gateway run and not ended yet, as the log says."""

    session_id: str
    alloc_id: str
    gateway: str
    gateway_run: str
    started_at: datetime


@dataclass(frozen=True)
class Sighting:
    """A run's entry as the sweeper last saw it change: its revision (None: absent) and when."""

    revision: int | None
    since: float


#: Per run id, the last change of its entry the sweeper saw.
Sightings = dict[str, Sighting]


def observe(before: Mapping[str, Sighting], revisions: Mapping[str, int | None], now: float) -> Sightings:
    """What the sweeper knows after looking up `revisions` (run -> revision, None if absent) at
    `now`: a run whose revision is what it was keeps its old `since`; any other starts at `now`.
    Runs not looked up this time (their sessions ended) are forgotten."""
    seen: Sightings = {}
    for run, revision in revisions.items():
        old = before.get(run)
        seen[run] = old if old is not None and old.revision == revision else Sighting(revision, now)
    return seen


def orphaned(
    sessions: Iterable[OpenSession],
    seen: Mapping[str, Sighting],
    *,
    now: float,
    lost_after: float,
    own_run: str,
) -> list[OpenSession]:
    """The sessions whose run has not refreshed its entry (or had none) for `lost_after` seconds
    by `seen`; never the sweeper's own run's, nor a run it has not looked at."""
    lost: list[OpenSession] = []
    for session in sessions:
        if session.gateway_run == own_run:
            continue
        sighting = seen.get(session.gateway_run)
        if sighting is not None and now - sighting.since >= lost_after:
            lost.append(session)
    return lost


def lost_detail(session: OpenSession) -> str:
    """`SessionEnded.detail` of a session its gateway left open."""
    return f"the gateway {session.gateway} run {session.gateway_run} stopped without ending the session"
