"""How often an interactive allocation's container is started again: a bounded number of times
in a sliding window. Pure: the caller gives the time.

An interactive allocation (no command) is up until it is released or expires, so a container
of one that stops without Potluck stopping it (the member's engine restarted, the machine
rebooted, the keep-alive killed from inside) is started again by hostd. Its keep-alive does
nothing that can fail, so starts that keep ending at once mean something about the container
or the engine is wrong: past the budget the container's end is reported instead, and the
allocation ends with its exit code, as a task's would.
"""

from collections import deque
from dataclasses import dataclass, field

__all__ = ["RestartBudget"]


@dataclass
class RestartBudget:
    times: int = 5
    window_s: float = 600.0
    _starts: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, alloc_id: str, now: float) -> bool:
        """Whether `alloc_id`'s container may be started again at `now`; counts it if so."""
        recent = self._starts.setdefault(alloc_id, deque())
        while recent and now - recent[0] >= self.window_s:
            recent.popleft()
        if len(recent) >= self.times:
            return False
        recent.append(now)
        return True

    def forget(self, alloc_id: str) -> None:
        """The allocation is over here: its count goes with it."""
        self._starts.pop(alloc_id, None)
