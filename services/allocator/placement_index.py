"""The Scheduler the allocator decides on, kept in step with its model host by host. Pure.

Building the scheduler's host list anew for every decision (`host_snapshots`,
then `place` over it) costs time in proportion to the pool: with 10,000 hosts,
milliseconds per request. `PlacementIndex` keeps one `Scheduler` instead and,
before each decision, brings up to date only the hosts whose facts changed
since the one before:

- hosts the model folded an event of: their host stream (registration,
  liveness, admin state, owner policy: the whole snapshot is rebuilt) or their
  capacity and images streams (`touch`, called by the model as it folds);
- hosts whose requests in flight came or went (`InFlightRequests.take_changed`):
  only their reservation changes.

Each of them gets exactly the snapshot `host_snapshots` would give it (the
ledger's reservation plus the requests in flight the ledger does not hold yet,
and the images it reported), so the index decides as `place` over
`host_snapshots` does; tests/unit/test_placement_index.py holds it to that. A
first decision, or one made with other requests in flight than the last,
builds the index from every host.
"""

from collections.abc import Mapping

from potluck.allocator.capacity import CapacityLedger, host_snapshots, snapshot_of
from potluck.allocator.in_flight import InFlightRequests, sum_of
from potluck.allocator.scheduler import Scheduler
from potluck.contracts.capacity import Capacity
from potluck.readmodels.hosts import HostsView

__all__ = ["PlacementIndex", "in_flight_beyond"]

_NOTHING: frozenset[str] = frozenset()


def in_flight_beyond(
    ledger: CapacityLedger, in_flight: InFlightRequests, host_id: str
) -> dict[str, Capacity]:
    """Reservations in flight on the host that the ledger does not hold yet, by allocation."""
    return {
        alloc_id: amount
        for alloc_id, amount in in_flight.on_host(host_id).items()
        if not ledger.holds(host_id, alloc_id)
    }


class PlacementIndex:
    def __init__(self) -> None:
        self._scheduler = Scheduler()
        #: Hosts whose whole snapshot must be rebuilt, and those whose reservation must be.
        self._facts_changed: set[str] = set()
        self._reservation_changed: set[str] = set()
        #: The requests in flight the index counts (None: build it from every host).
        self._in_flight: InFlightRequests | None = None

    def touch(self, host_id: str, *, reservation_only: bool = False) -> None:
        """The model folded an event about the host: what placement knows of it may differ."""
        (self._reservation_changed if reservation_only else self._facts_changed).add(host_id)

    def current(
        self,
        hosts: HostsView,
        ledger: CapacityLedger,
        images: Mapping[str, frozenset[str]],
        in_flight: InFlightRequests,
    ) -> Scheduler:
        """The Scheduler of the pool as the model and `in_flight` have it now."""
        changed = in_flight.take_changed()
        if in_flight is not self._in_flight:
            self._rebuild(hosts, ledger, images, in_flight)
            return self._scheduler
        scheduler = self._scheduler
        for host_id in self._facts_changed:
            state = hosts.hosts.get(host_id)
            snapshot = (
                None
                if state is None
                else snapshot_of(
                    state, self._reserved(ledger, in_flight, host_id), images.get(host_id, _NOTHING)
                )
            )
            if snapshot is None:
                scheduler.remove_host(host_id)
            else:
                scheduler.set_host(snapshot)
        for host_id in (self._reservation_changed | changed) - self._facts_changed:
            if host_id in scheduler:
                scheduler.set_reserved(host_id, self._reserved(ledger, in_flight, host_id))
        self._facts_changed.clear()
        self._reservation_changed.clear()
        return scheduler

    def _rebuild(
        self,
        hosts: HostsView,
        ledger: CapacityLedger,
        images: Mapping[str, frozenset[str]],
        in_flight: InFlightRequests,
    ) -> None:
        flying = {e.host_id for e in in_flight.of_all() if e.host_id is not None}
        extra = {h: sum_of(in_flight_beyond(ledger, in_flight, h).values()) for h in flying}
        self._scheduler = Scheduler(host_snapshots(hosts, ledger, in_flight=extra, images=images))
        self._facts_changed.clear()
        self._reservation_changed.clear()
        self._in_flight = in_flight

    @staticmethod
    def _reserved(ledger: CapacityLedger, in_flight: InFlightRequests, host_id: str) -> Capacity:
        """The ledger's reservation plus what is in flight beyond it: the sum host_snapshots
        makes, by the same arithmetic (Capacity.__add__), without a Capacity per step."""
        reserved = ledger.reserved(host_id)
        if not in_flight.count_on(host_id):
            return reserved
        cpus, memory, disk = 0.0, 0, 0
        for amount in in_flight_beyond(ledger, in_flight, host_id).values():
            cpus = round(cpus + amount.cpus, 6)
            memory += amount.memory_bytes
            disk += amount.disk_bytes
        return Capacity.model_construct(
            cpus=round(reserved.cpus + cpus, 6),
            memory_bytes=reserved.memory_bytes + memory,
            disk_bytes=reserved.disk_bytes + disk,
        )
