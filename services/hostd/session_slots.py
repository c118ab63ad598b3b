"""How many sessions hostd carries at once: in all, and for one allocation.

Every session the gateway opens takes one of hostd's connections (and hostd
dials a spare to replace it), an engine socket for the exec's stream, and a
process in the container. Without a cap, one user opening sessions in a loop
exhausts the member's file descriptors and hostd stops serving everyone.
With it, the session over the cap is told why (its process never starts) and
ends at once, giving its connection back; the other allocations on the host
keep their share, because one allocation may hold only
`per_allocation` of the `total` places.
"""

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["SessionLimits", "SessionSlots"]


@dataclass(frozen=True)
class SessionLimits:
    #: Sessions running at once on this host, over all gateways.
    total: int = 64
    #: Sessions running at once for one allocation.
    per_allocation: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.per_allocation <= self.total:
            raise ValueError("need 1 <= per_allocation <= total")


@dataclass
class SessionSlots:
    limits: SessionLimits = field(default_factory=SessionLimits)
    _held: Counter[str] = field(default_factory=Counter)

    @property
    def in_use(self) -> int:
        return self._held.total()

    def take(self, alloc_id: str) -> str | None:
        """None if a session of `alloc_id` may run (give the slot back later); else why not."""
        if self._held[alloc_id] >= self.limits.per_allocation:
            return (
                f"allocation {alloc_id} has {self.limits.per_allocation} sessions open, the most one "
                "allocation may have on its machine; close one and try again"
            )
        if self.in_use >= self.limits.total:
            return (
                f"the machine running allocation {alloc_id} carries {self.limits.total} sessions, "
                "its most; try again later"
            )
        self._held[alloc_id] += 1
        return None

    def give_back(self, alloc_id: str) -> None:
        self._held[alloc_id] -= 1
        if self._held[alloc_id] <= 0:
            del self._held[alloc_id]
