"""When a silent host becomes unreachable, then lost: the policy and the last-seen clock.

Heartbeats are not events; only the transitions they cause are. A restarted
registry has seen nobody yet, so it counts every host as seen at its own start:
each host gets a fresh grace period instead of the whole pool being declared
lost at once.

Silence is not death. A host silent past the suspect time is *unreachable*
(no new work, its allocations wait for it); one that said it sleeps is *asleep*
and is not suspected at all. Either is *lost* (its allocations given up) only
after `stranded_grace_s`: a laptop closed overnight keeps its users' work.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from potluck.readmodels.hosts import HostState
from potluck.registry.host import went_silent

#: Eight hours: a laptop closed for the night comes back with its work.
STRANDED_GRACE_S = 8 * 3600.0


@dataclass(frozen=True)
class LivenessPolicy:
    """Defaults fit laptops: a lid closed for lunch or a Wi-Fi change makes a host
    unreachable (no new work) long before it is lost (its work given up).

    One grace for all work today. Batch work (issue 18) may get a shorter one of its
    own: re-queued elsewhere rather than waiting; that belongs here, as a second field
    the allocator's loss decision reads, when batch allocations exist.
    """

    heartbeat_interval_s: float = 5.0
    suspect_after_missed: int = 3
    stranded_grace_s: float = STRANDED_GRACE_S

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s <= 0:
            raise ValueError("heartbeat interval must be positive")
        if self.suspect_after_missed < 1:
            raise ValueError("suspect_after_missed must be at least 1")
        if self.stranded_grace_s <= self.suspect_after_s:
            raise ValueError(
                f"stranded_grace_s ({self.stranded_grace_s}) must exceed the suspect time "
                f"({self.suspect_after_s})"
            )

    @property
    def suspect_after_s(self) -> float:
        return self.heartbeat_interval_s * self.suspect_after_missed


def silence_of(state: HostState, seen_silent_s: float, now: datetime) -> float:
    """How long the host has been silent, for deciding.

    The last-seen clock starts afresh with each registry; a host already asleep or
    unreachable in the log has been silent at least since the log says so, so a
    restarted registry does not hand an eight-hour sleeper another eight hours; and an
    online host has been silent at most since it came online by the log.
    """
    if state.waiting and state.liveness_since is not None:
        return max(seen_silent_s, (now - state.liveness_since).total_seconds())
    if state.liveness == "online" and state.liveness_since is not None:
        # Its registration or recovery, as the log records it, was a sign of life too: with two
        # registries, the one that did not answer it has no beat of the host yet and counted its
        # silence from its own start, so a host it folded before its first beat came was
        # suspected or lost at once (test_replicas.py). A log clock ahead of this one's delays
        # a suspicion by the difference, at most.
        return min(seen_silent_s, max(0.0, (now - state.liveness_since).total_seconds()))
    return seen_silent_s


def transition_due(state: HostState, seen_silent_s: float, now: datetime, policy: LivenessPolicy) -> bool:
    """Whether the Host aggregate would record a silence transition for `state` now.

    The cheap test first (every host within its suspect time, i.e. nearly all, stops
    there), then the aggregate's own decision, so that the watch and the aggregate can
    never disagree on what is due: an unreachable host is due again only at the
    stranded grace, a lost one never.
    """
    if not state.registered or state.liveness == "lost":
        return False
    silence = silence_of(state, seen_silent_s, now)
    if silence < policy.suspect_after_s:
        return False
    return bool(
        went_silent(
            state,
            silence,
            suspect_after_s=policy.suspect_after_s,
            stranded_grace_s=policy.stranded_grace_s,
        )
    )


class LastSeen:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._seen: dict[str, float] = {}

    def beat(self, host_id: str) -> None:
        self._seen[host_id] = self._clock()

    def silent_for(self, host_id: str) -> float:
        return self._clock() - self._seen.get(host_id, self._started)

    def seen_ago(self) -> dict[str, float]:
        now = self._clock()
        return {host: now - at for host, at in self._seen.items()}
