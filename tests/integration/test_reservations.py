"""Two allocator replicas place the same requests against one real log: nothing is over-committed.

Each replica keeps its own capacity ledger, refreshed from the capacity
streams before every decision, and appends each placement with the two
expected versions (the allocation's stream, the host's capacity stream). Every
request is raced by both replicas at once; the loser of each race gets
WrongExpectedVersion, re-reads and decides again. Afterwards the whole log,
folded from scratch, shows no host over its donation, nothing on the paused
host, every allocation placed at most once, and every request answered:
placed, refused as impossible, or told to wait because the pool is full.
"""

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from potluck.allocator.capacity import (
    CapacityLedger,
    allocation_placed,
    host_snapshots,
    placement_request,
    reservation_appends,
)
from potluck.allocator.scheduler import (
    NO_FREE_CAPACITY,
    NO_SCHEDULABLE_HOST,
    Decision,
    Impossible,
    Placed,
    Wait,
    place,
)
from potluck.contracts.allocation_events import (
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationSpec,
    CapacityFreed,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import HostEnrolled, HostPaused, host_stream
from potluck.events import NO_STREAM, Event, EventStore, StreamAppend, WrongExpectedVersion, registry
from potluck.readmodels.allocations import AllocationState, AllocationsView, evolve
from potluck.readmodels.hosts import HostsView
from potluck.registry.projection import rebuild_view
from tests.helpers import host_registered

MIB = 1 << 20
GIB = 1 << 30
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)
HOSTS: dict[str, tuple[Capacity, dict[str, str]]] = {
    "a": (Capacity(cpus=4, memory_bytes=8 * GIB, disk_bytes=40 * GIB), {"arch": "amd64"}),
    "b": (Capacity(cpus=2, memory_bytes=4 * GIB, disk_bytes=20 * GIB), {"arch": "arm64"}),
    "c": (Capacity(cpus=4, memory_bytes=4 * GIB, disk_bytes=40 * GIB), {"arch": "amd64"}),
    # Paused by its member: roomy, but it must never get anything.
    "p": (Capacity(cpus=16, memory_bytes=64 * GIB, disk_bytes=200 * GIB), {"arch": "amd64"}),
}
REQUESTS = 130


def resources(cpus: float, memory: int, disk: int = GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def the_requests() -> list[AllocationRequested]:
    rnd = random.Random(4)
    requests = []
    for i in range(REQUESTS):
        constraints: dict[str, str] = {}
        match i % 13:
            case 0:  # more than any host could ever give
                wanted = resources(32, GIB)
            case 1:
                wanted = resources(0.5, 512 * MIB)
                constraints = {"arch": "arm64"}
            case 2:  # only the paused host could hold it
                wanted = resources(8, 16 * GIB)
            case _:
                wanted = resources(rnd.choice([0.25, 0.5, 1.0]), rnd.choice([256, 512, 1024]) * MIB)
        requests.append(
            AllocationRequested(
                alloc_id=f"r{i:03d}",
                user=f"user{i % 4}",
                spec=AllocationSpec(resources=wanted, image="potluck-test:1"),
                lifetime_s=3600,
                constraints=constraints,
            )
        )
    return requests


async def register_hosts(store: EventStore) -> None:
    appends = []
    for host_id, (donated, labels) in HOSTS.items():
        events: list[Event] = [
            HostEnrolled(host_id=host_id, name=f"laptop-{host_id}", nkey="U" + host_id.upper()),
            host_registered(
                host_id=host_id, donated=donated, labels=labels, engine=ENGINE, hostd_version="test"
            ),
        ]
        if host_id == "p":
            events.append(HostPaused(host_id=host_id, by="member"))
        appends.append(StreamAppend(host_stream(host_id), events, NO_STREAM))
    await store.append_streams(appends)


@dataclass
class Replica:
    """One allocator replica: its own connection pool, host view and capacity ledger."""

    name: str
    store: EventStore
    view: HostsView
    ledger: CapacityLedger = field(default_factory=CapacityLedger)
    conflicts: int = 0
    answers: dict[str, Decision] = field(default_factory=dict)

    async def refresh(self) -> None:
        """Fold what the capacity streams gained since this replica last looked."""
        batches = await asyncio.gather(
            *(self.store.read_stream(capacity_stream(h), after_version=self.ledger.version(h)) for h in HOSTS)
        )
        for records in batches:
            for record in records:
                self.ledger.apply(registry.decode_record(record), version=record.version)

    async def load(self, alloc_id: str) -> AllocationState:
        state: AllocationState | None = None
        for record in await self.store.read_stream(alloc_stream(alloc_id)):
            state = evolve(state, registry.decode_record(record), record.version, record.recorded_at)
        assert state is not None
        return state

    async def place(self, alloc_id: str) -> None:
        """Read, decide, append with expected versions; on a lost race, again."""
        for _ in range(500):
            await self.refresh()
            state = await self.load(alloc_id)
            if state.status != "pending":
                return  # the other replica got there first
            # From here to the append's start nothing awaits: the decision and the
            # versions it expects come from the same ledger.
            decision = place(host_snapshots(self.view, self.ledger), placement_request(state))
            match decision:
                case Wait():
                    self.answers[alloc_id] = decision
                    return
                case Impossible(code, message, _):
                    refused = AllocationRefused(
                        alloc_id=alloc_id, reason="NO_HOST_COULD_EVER_FIT", detail=f"{code}: {message}"
                    )
                    appends = [StreamAppend(alloc_stream(alloc_id), [refused], state.version)]
                case Placed(host_id):
                    placed = allocation_placed(state, host_id, datetime.now(UTC))
                    appends = reservation_appends(placed, self.ledger, alloc_version=state.version)
            try:
                await self.store.append_streams(appends, metadata={"actor": self.name})
            except WrongExpectedVersion:
                self.conflicts += 1
                await asyncio.sleep(random.uniform(0, 0.005))
                continue
            self.answers[alloc_id] = decision
            return
        raise AssertionError(f"{self.name} could not settle {alloc_id}")


@dataclass
class Folded:
    hosts: HostsView
    ledger: CapacityLedger
    allocations: AllocationsView
    counts: dict[str, int]


async def fold_log(store: EventStore) -> Folded:
    """Everything, from the log alone, from position 0."""
    hosts, ledger, allocations = HostsView(), CapacityLedger(), AllocationsView()
    counts: dict[str, int] = {}
    after = 0
    while records := await store.read_all(after, 1000):
        for record in records:
            event = registry.decode_record(record)
            counts[record.type] = counts.get(record.type, 0) + 1
            hosts.apply(event, position=record.position, version=record.version, at=record.recorded_at)
            allocations.apply(event, position=record.position, version=record.version, at=record.recorded_at)
            if record.category == "capacity":
                ledger.apply(event, version=record.version)
        after = records[-1].position
    return Folded(hosts, ledger, allocations, counts)


def check_no_host_over_committed(log: Folded) -> None:
    for host_id, (donated, _) in HOSTS.items():
        reserved = log.ledger.reserved(host_id)
        assert reserved.fits_in(donated), f"host {host_id} over-committed: {reserved} > {donated}"
        on_host = {
            a.alloc_id: a.spec.resources
            for a in log.allocations.allocations.values()
            if a.host_id == host_id and a.status == "placed"
        }
        assert dict(log.ledger.holdings(host_id)) == on_host
    assert log.ledger.holdings("p") == {}, "placed on the paused host"
    assert log.counts.get("AllocationPlaced", 0) == log.counts.get("CapacityReserved", 0)


def check_every_request_answered(log: Folded, replicas: list[Replica]) -> None:
    snapshots = host_snapshots(log.hosts, log.ledger)
    for state in log.allocations.allocations.values():
        answers = [r.answers[state.alloc_id] for r in replicas if state.alloc_id in r.answers]
        match state.status:
            case "placed" | "released":
                assert state.host_id in ("a", "b", "c")
                assert any(isinstance(a, Placed) for a in answers)
            case "refused":
                assert state.reason == "NO_HOST_COULD_EVER_FIT"
                assert any(isinstance(a, Impossible) for a in answers)
            case "pending":
                assert answers, f"{state.alloc_id} got no answer"
                assert all(isinstance(a, Wait) for a in answers)
                # And it still could not be placed: capacity only shrank since.
                assert place(snapshots, placement_request(state)) in (
                    Wait(NO_FREE_CAPACITY),
                    Wait(NO_SCHEDULABLE_HOST),
                )
            case other:
                raise AssertionError(f"{state.alloc_id} is {other}")


async def test_two_replicas_racing_never_over_commit_a_host(store: EventStore) -> None:
    await register_hosts(store)
    requests = the_requests()
    await store.append_streams([StreamAppend(alloc_stream(r.alloc_id), [r], NO_STREAM) for r in requests])

    replicas = []
    for name in ("allocator-1", "allocator-2"):
        own = await EventStore.open(store.dsn, max_size=8, migrate=False)
        view = HostsView()
        await rebuild_view(own, view)
        replicas.append(Replica(name, own, view))
    try:
        # Every request raced by both replicas at once, in a different order each.
        order = [r.alloc_id for r in requests]
        tasks: list[Coroutine[Any, Any, None]] = []
        for n, replica in enumerate(replicas):
            mine = order[::-1] if n else order
            tasks.extend(replica.place(alloc_id) for alloc_id in mine)
        await asyncio.gather(*tasks)

        log = await fold_log(store)
        check_no_host_over_committed(log)
        check_every_request_answered(log, replicas)
        statuses = [a.status for a in log.allocations.allocations.values()]
        assert len(statuses) == REQUESTS
        assert statuses.count("refused") == 10  # the 32-cpu ones
        assert statuses.count("placed") >= 10
        assert statuses.count("pending") >= 20
        assert sum(r.conflicts for r in replicas) > 0, "the replicas never raced"
        # The arm64-only requests went to the one arm64 host.
        assert {a.host_id for a in log.allocations.allocations.values() if a.constraints} <= {"b", None}

        # Releasing frees capacity for what waits; racing again still over-commits nothing.
        placed = sorted(
            (a for a in log.allocations.allocations.values() if a.status == "placed"),
            key=lambda a: a.alloc_id,
        )
        for state in placed[::2]:
            assert state.host_id is not None
            await store.append_streams(
                [
                    StreamAppend(
                        alloc_stream(state.alloc_id),
                        [AllocationReleased(alloc_id=state.alloc_id, host_id=state.host_id, by="user")],
                        state.version,
                    ),
                    StreamAppend(
                        capacity_stream(state.host_id),
                        [
                            CapacityFreed(
                                host_id=state.host_id, alloc_id=state.alloc_id, amount=state.spec.resources
                            )
                        ],
                    ),
                ]
            )
        waiting = [a.alloc_id for a in log.allocations.allocations.values() if a.status == "pending"]
        for replica in replicas:
            replica.answers = {k: v for k, v in replica.answers.items() if k not in waiting}
        await asyncio.gather(*(replica.place(alloc_id) for replica in replicas for alloc_id in waiting))

        after = await fold_log(store)
        check_no_host_over_committed(after)
        check_every_request_answered(after, replicas)
        newly_placed = [
            a
            for a in after.allocations.allocations.values()
            if a.alloc_id in waiting and a.status == "placed"
        ]
        assert newly_placed, "freed capacity went to no waiting request"
        assert after.counts["AllocationPlaced"] == len(placed) + len(newly_placed)
        assert after.counts["CapacityFreed"] == len(placed[::2])
    finally:
        for replica in replicas:
            await replica.store.close()
