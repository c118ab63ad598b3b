"""When a silent host becomes suspect, then lost: the policy and the last-seen clock.

Heartbeats are not events; only the transitions they cause are. A restarted
registry has seen nobody yet, so it counts every host as seen at its own start:
each host gets a fresh grace period instead of the whole pool being declared
lost at once.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LivenessPolicy:
    """Defaults fit laptops: a lid closed for lunch or a Wi-Fi change makes a host
    suspect (no new work) long before it is lost (its work given up)."""

    heartbeat_interval_s: float = 5.0
    suspect_after_missed: int = 3
    lost_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s <= 0:
            raise ValueError("heartbeat interval must be positive")
        if self.suspect_after_missed < 1:
            raise ValueError("suspect_after_missed must be at least 1")
        if self.lost_after_s <= self.suspect_after_s:
            raise ValueError(
                f"lost_after_s ({self.lost_after_s}) must exceed the suspect time ({self.suspect_after_s})"
            )

    @property
    def suspect_after_s(self) -> float:
        return self.heartbeat_interval_s * self.suspect_after_missed


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
