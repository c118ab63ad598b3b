"""Requests an allocator has queued for the log but not folded back from it yet.

Pure: values in, values out.

An allocator decides a request, queues its append and decides the next one
without waiting for the first to commit and come back through the follower
(`EventStore.append_streams_nowait`: appends queued in order commit in order,
most often several in one transaction). Decisions made meanwhile must count the
requests still in flight, or they would offer the same free capacity twice and
let a user past their quota:

- a placed request's reservation counts against its host's free capacity, and
  in the expected version of the host's capacity stream (the version after
  the reservations queued before it);
- every request counts against its user's quota.

An entry leaves when the follower folds the last event of its append (the
CapacityReserved of a placed request, the AllocationRequested of a pending
one) or when its append fails. Counting one twice is harmless, never wrong in
the unsafe direction: the log's expected versions still refuse an append made
on a stale view, and the allocator then decides again.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from potluck.allocator.scheduler import ZERO
from potluck.contracts.capacity import Capacity


@dataclass(frozen=True)
class InFlight:
    alloc_id: str
    user: str
    resources: Capacity
    #: None for a request queued as pending.
    host_id: str | None


class InFlightRequests:
    def __init__(self) -> None:
        self._entries: dict[str, InFlight] = {}
        self._on_host: dict[str, dict[str, Capacity]] = {}
        #: Hosts whose reservations in flight came or went since `take_changed` last asked.
        self._changed: set[str] = set()
        #: How many placed entries left because their append failed, ever: the room they held
        #: on their host is free again (the allocator's queue is tried again on it). One that
        #: lands only moves its reservation from here to the ledger.
        self.failed_to_land = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: InFlight) -> None:
        if entry.alloc_id in self._entries:
            raise ValueError(f"allocation {entry.alloc_id} is in flight already")
        self._entries[entry.alloc_id] = entry
        if entry.host_id is not None:
            self._on_host.setdefault(entry.host_id, {})[entry.alloc_id] = entry.resources
            self._changed.add(entry.host_id)

    def settle(self, alloc_id: str, *, landed: bool = True) -> None:
        """The entry's append was folded (`landed`), or failed: it no longer counts. Unknown ids
        are ignored."""
        entry = self._entries.pop(alloc_id, None)
        if entry is None or entry.host_id is None:
            return
        if not landed:
            self.failed_to_land += 1
        self._changed.add(entry.host_id)
        held = self._on_host[entry.host_id]
        del held[alloc_id]
        if not held:
            del self._on_host[entry.host_id]

    def take_changed(self) -> set[str]:
        """Hosts whose reservations in flight changed since the last call (placement_index.py,
        its one reader, brings only those up to date)."""
        changed, self._changed = self._changed, set()
        return changed

    def get(self, alloc_id: str) -> InFlight | None:
        return self._entries.get(alloc_id)

    def on_host(self, host_id: str) -> dict[str, Capacity]:
        """Reservations in flight on the host, by allocation."""
        return dict(self._on_host.get(host_id, {}))

    def reserved_on(self, host_id: str) -> Capacity:
        return sum_of(self._on_host.get(host_id, {}).values())

    def count_on(self, host_id: str) -> int:
        """How many reservations on the host are queued ahead of the next one."""
        return len(self._on_host.get(host_id, {}))

    def of_all(self) -> list[InFlight]:
        return list(self._entries.values())

    def of_user(self, user: str) -> list[InFlight]:
        return [e for e in self._entries.values() if e.user == user]


def sum_of(amounts: Iterable[Capacity]) -> Capacity:
    total = ZERO
    for amount in amounts:
        total = total + amount
    return total
