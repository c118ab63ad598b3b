"""The allocator's model (services/allocator/model.py), folded by the one Fold, without servers.

What must hold: the model folds hosts, capacity, allocations, users and quota
versions as the log says; an event it cannot read is skipped but still counts
in the version of its stream; its queries answer from what it folded; and the
fold is deterministic: the same events give the same state, however they are
batched, replayed twice or interleaved with unreadable ones, and the
operator's replay (`ReadModels`) holds exactly what the allocator holds.
"""

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.allocator.canonical import canonical
from potluck.allocator.model import AllocatorModel
from potluck.contracts.allocation_events import (
    AllocationExpired,
    AllocationPlaced,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
    AllocationUnplaced,
    CapacityFreed,
    CapacityReserved,
    Quota,
    QuotaCharged,
    UserAdded,
    UserQuotaChanged,
    UserRemoved,
    UserRestored,
    UserTokenRotated,
    alloc_stream,
    capacity_stream,
    quota_stream,
    user_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostEnrolled,
    HostLost,
    host_stream,
)
from potluck.events import Event, Fold, RecordedEvent, StreamAppend, WrongExpectedVersion
from potluck.projections import ReadModels
from tests.helpers import host_registered

GIB = 1 << 30
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


def cap(cpus: float, gib: int = 1) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=gib * GIB, disk_bytes=gib * GIB)


def spec(cpus: float, gib: int = 1) -> AllocationSpec:
    return AllocationSpec(resources=cap(cpus, gib), image="potluck-test:1")


class RecordingLog:
    """The log in memory: appends are checked against expected versions as EventStore does
    (all hold, or nothing is written) and recorded with positions, versions and times."""

    def __init__(self) -> None:
        self.records: list[RecordedEvent] = []
        self.versions: dict[str, int] = {}

    def version(self, stream: str) -> int:
        return self.versions.get(stream, 0)

    def append(self, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        for a in appends:
            actual = self.version(a.stream)
            if a.expected_version is not None and a.expected_version != actual:
                raise WrongExpectedVersion(a.stream, a.expected_version, actual)
        recorded = []
        for a in appends:
            for event in a.events:
                assert isinstance(event, Event)
                recorded.append(
                    self.raw(a.stream, event.type_name, event.model_dump_json(), event.schema_version)
                )
        return recorded

    def add(self, stream: str, *events: Event) -> list[RecordedEvent]:
        return self.append([StreamAppend(stream, events)])

    def raw(self, stream: str, type_name: str, data: str, schema_version: int = 1) -> RecordedEvent:
        """Record whatever is given: also what no reader can decode."""
        version = self.versions[stream] = self.version(stream) + 1
        position = len(self.records) + 1
        at = T0 + timedelta(seconds=position)
        record = RecordedEvent(position, uuid4(), stream, version, type_name, schema_version, data, {}, at)
        self.records.append(record)
        return record


def host(log: RecordingLog, host_id: str, donated: Capacity, **labels: str) -> None:
    log.add(
        host_stream(host_id),
        HostEnrolled(host_id=host_id, name=host_id, nkey="U" + host_id),
        host_registered(host_id=host_id, donated=donated, labels=labels, engine=ENGINE, hostd_version="t"),
    )


def placed(log: RecordingLog, alloc_id: str, user: str, host_id: str, resources: AllocationSpec) -> None:
    """A request placed at once, as the allocator appends it: quota, allocation, reservation."""
    requested = AllocationRequested(alloc_id=alloc_id, user=user, spec=resources, lifetime_s=3600)
    log.append(
        [
            StreamAppend(quota_stream(user), [QuotaCharged(user=user, alloc_id=alloc_id)]),
            StreamAppend(
                alloc_stream(alloc_id),
                [
                    requested,
                    AllocationPlaced(
                        alloc_id=alloc_id,
                        host_id=host_id,
                        user=user,
                        spec=resources,
                        expires_at=T0 + timedelta(hours=1),
                    ),
                ],
            ),
            StreamAppend(
                capacity_stream(host_id),
                [CapacityReserved(host_id=host_id, alloc_id=alloc_id, amount=resources.resources)],
            ),
        ]
    )


def folded(log: RecordingLog) -> tuple[AllocatorModel, Fold]:
    model = AllocatorModel()
    fold = Fold(model, reader="test")
    fold.apply_all(log.records)
    return model, fold


def state_of(model: AllocatorModel) -> dict[str, Any]:
    """Everything the model holds, as plain data."""
    return {
        **canonical(hosts=model.hosts, ledger=model.ledger, allocations=model.allocations, users=model.users),
        "quota_versions": dict(sorted(model.quota_versions.items())),
    }


# --- folding ----------------------------------------------------------------------------------


def test_the_model_folds_hosts_capacity_allocations_users_and_quota_versions() -> None:
    log = RecordingLog()
    host(log, "h1", cap(4, 8), arch="arm64")
    log.add(user_stream("alice"), UserAdded(user="alice", token_sha256="ab" * 32, quota=Quota(cpus=2)))
    placed(log, "a1", "alice", "h1", spec(1, 2))
    log.add(alloc_stream("a1"), AllocationRunning(alloc_id="a1", host_id="h1", container_id="c1"))
    pending = AllocationRequested(alloc_id="a2", user="alice", spec=spec(8), lifetime_s=60)
    log.append(
        [
            StreamAppend(quota_stream("alice"), [QuotaCharged(user="alice", alloc_id="a2")]),
            StreamAppend(alloc_stream("a2"), [pending]),
        ]
    )
    log.add("session-s1", UserAdded(user="not-folded", token_sha256="cd" * 32))  # another category

    model, fold = folded(log)

    assert model.hosts.hosts["h1"].labels == {"arch": "arm64"}
    assert model.ledger.reserved("h1") == cap(1, 2)
    assert model.ledger.version("h1") == 1
    assert model.allocations.allocations["a1"].status == "running"
    assert model.allocations.allocations["a2"].status == "pending"
    assert set(model.users.users) == {"alice"}
    assert model.users.users["alice"].quota.cpus == 2
    assert model.quota_versions == {"alice": 2}
    assert fold.position == len(log.records)
    assert fold.skipped.count == 0


def test_an_unreadable_event_is_skipped_but_counts_in_the_version_of_its_stream() -> None:
    """Else every later append expecting that stream's version would conflict forever."""
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    placed(log, "a1", "alice", "h1", spec(1))
    for stream in (host_stream("h1"), capacity_stream("h1"), alloc_stream("a1"), quota_stream("alice")):
        log.raw(stream, "SomethingNewer", json.dumps({"from": "a newer writer"}))
    log.raw(capacity_stream("h2"), "CapacityReserved", json.dumps({"host_id": "h2"}))  # malformed

    model, fold = folded(log)

    assert fold.skipped.count == 5
    assert [s.stream for s in fold.skipped.recent][-1] == "capacity-h2"
    assert model.hosts.hosts["h1"].version == log.version(host_stream("h1")) == 3
    assert model.ledger.version("h1") == log.version(capacity_stream("h1")) == 2
    assert model.ledger.version("h2") == 1
    assert model.ledger.reserved("h1") == cap(1)  # nothing else moved
    assert model.allocations.allocations["a1"].version == log.version(alloc_stream("a1")) == 3
    assert model.allocations.allocations["a1"].status == "placed"
    assert model.quota_versions["alice"] == log.version(quota_stream("alice")) == 2


def test_an_unreadable_first_event_of_an_allocation_makes_no_allocation() -> None:
    log = RecordingLog()
    log.raw(alloc_stream("a1"), "AllocationRequestedV9", "{}")
    model, fold = folded(log)
    assert model.allocations.allocations == {}
    assert fold.skipped.count == 1


# --- queries ----------------------------------------------------------------------------------


def test_queries_answer_from_what_was_folded() -> None:
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    host(log, "h2", cap(2, 4))
    placed(log, "a1", "alice", "h1", spec(1))
    placed(log, "a2", "alice", "h2", spec(1, 2))
    placed(log, "a3", "bob", "h1", spec(2))
    log.add(
        alloc_stream("a4"), AllocationRequested(alloc_id="a4", user="alice", spec=spec(16), lifetime_s=60)
    )
    log.add(
        alloc_stream("a2"),
        AllocationReleased(alloc_id="a2", host_id="h2", by="user:alice"),
    )
    log.add(capacity_stream("h2"), CapacityFreed(host_id="h2", alloc_id="a2", amount=cap(1, 2)))
    model, _ = folded(log)

    assert [a.alloc_id for a in model.allocations_of("alice")] == ["a1", "a2", "a4"]
    assert [a.alloc_id for a in model.allocations_of("alice", "pending")] == ["a4"]
    assert model.held_by("alice") == {"a1": cap(1), "a4": cap(16)}  # not the released one
    assert sorted(model.active_on("h1")) == ["a1", "a3"]
    assert model.active_on("h2") == []
    assert [a.alloc_id for a in model.pending()] == ["a4"]
    assert model.due(T0 + timedelta(minutes=59)) == []
    assert sorted(model.due(T0 + timedelta(hours=1))) == ["a1", "a3"]

    pool = model.pool()
    assert [(h.host_id, h.reserved.cpus, h.free.cpus) for h in pool.hosts] == [
        ("h1", 3.0, 1.0),
        ("h2", 0.0, 2.0),
    ]
    assert pool.total["donated"].cpus == 6.0
    assert pool.total["free"].memory == 12 * GIB - 2 * GIB


def test_the_pool_leaves_out_deregistered_hosts() -> None:
    log = RecordingLog()
    host(log, "h1", cap(4, 8))
    host(log, "h2", cap(2, 4))
    log.add(host_stream("h2"), HostDeregistered(host_id="h2", by="member"))
    model, _ = folded(log)
    assert [h.host_id for h in model.pool().hosts] == ["h1"]
    assert model.pool().total["donated"].cpus == 4.0


# --- determinism ------------------------------------------------------------------------------

HOSTS = ("h1", "h2")
ALLOCS = ("a1", "a2", "a3")
USERS = ("alice", "bob")


def _alloc_events(alloc_id: str, user: str, host_id: str, cpus: float) -> list[Event]:
    return [
        AllocationRequested(alloc_id=alloc_id, user=user, spec=spec(cpus), lifetime_s=60),
        AllocationPlaced(alloc_id=alloc_id, host_id=host_id, user=user, spec=spec(cpus), expires_at=T0),
        AllocationRunning(alloc_id=alloc_id, host_id=host_id, container_id="c-" + alloc_id),
        # A placement undone: the fair queue's turns must still remember it (last_placed).
        AllocationUnplaced(alloc_id=alloc_id, host_id=host_id, reason="image_pull_failed"),
        AllocationExpired(alloc_id=alloc_id, host_id=host_id),
        AllocationReleased(alloc_id=alloc_id, host_id=host_id, by="user:" + user),
    ]


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, Event | None]:
    """One (stream, event) of any kind the model folds, in any order; None: an unreadable event."""
    host_id = draw(st.sampled_from(HOSTS))
    alloc_id = draw(st.sampled_from(ALLOCS))
    user = draw(st.sampled_from(USERS))
    cpus = draw(st.sampled_from([0.5, 1.0, 2.0]))
    kind = draw(st.sampled_from(["host", "capacity", "alloc", "user", "quota", "unreadable"]))
    if kind == "host":
        event: Event = draw(
            st.sampled_from(
                [
                    HostEnrolled(host_id=host_id, name=host_id, nkey="U"),
                    host_registered(host_id=host_id, donated=cap(4, 8), engine=ENGINE, hostd_version="t"),
                    HostLost(host_id=host_id, silent_for_s=90),
                    HostDeregistered(host_id=host_id, by="member"),
                ]
            )
        )
        return host_stream(host_id), event
    if kind == "capacity":
        amount = cap(cpus)
        reserved = CapacityReserved(host_id=host_id, alloc_id=alloc_id, amount=amount)
        freed = CapacityFreed(host_id=host_id, alloc_id=alloc_id, amount=amount)
        return capacity_stream(host_id), draw(st.sampled_from([reserved, freed]))
    if kind == "alloc":
        return alloc_stream(alloc_id), draw(st.sampled_from(_alloc_events(alloc_id, user, host_id, cpus)))
    if kind == "user":
        token = draw(st.sampled_from(["aa", "bb", "cc"]))
        return user_stream(user), draw(
            st.sampled_from(
                [
                    UserAdded(user=user, token_sha256=token),
                    UserTokenRotated(user=user, token_sha256=token),
                    UserRemoved(user=user, by="olga", reason="left"),
                    UserQuotaChanged(user=user, quota=Quota(cpus=cpus)),
                    UserRestored(user=user, token_sha256=token, quota=Quota(cpus=cpus), by="olga"),
                ]
            )
        )
    if kind == "quota":
        return quota_stream(user), QuotaCharged(user=user, alloc_id=alloc_id)
    stream = draw(st.sampled_from([host_stream(host_id), capacity_stream(host_id), alloc_stream(alloc_id)]))
    return stream, None


def recorded(history: list[tuple[str, Event | None]]) -> RecordingLog:
    """The log of `history`, but for an AllocationRequested after its stream's first event: the
    allocator appends one only at version 0, and after a retention window has dropped the
    allocation such a request would be folded as a new one, which no real log can hold."""
    log = RecordingLog()
    started: set[str] = set()
    for stream, event in history:
        if isinstance(event, AllocationRequested) and stream in started:
            continue
        started.add(stream)
        if event is None:
            log.raw(stream, "FromTheFuture", "{}")
        else:
            log.add(stream, event)
    return log


@settings(max_examples=150, deadline=None)
@given(history=st.lists(steps(), max_size=40), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_the_same_events_give_the_same_state_however_they_are_fed(
    history: list[tuple[str, Event | None]], cuts: list[int]
) -> None:
    log = recorded(history)
    at_once, fold = folded(log)

    # In batches, each batch handed over again after it was folded (a redelivery).
    in_batches = AllocatorModel()
    again = Fold(in_batches, reader="test")
    bounds = [0, *sorted(cuts), len(log.records)]
    for start, end in itertools.pairwise(bounds):
        again.apply_all(log.records[start:end])
        again.apply_all(log.records[:end])

    assert state_of(in_batches) == state_of(at_once)
    assert again.position == fold.position
    assert again.skipped.count == fold.skipped.count == sum(1 for _, e in history if e is None)

    # The operator's replay folds the very same model.
    replay = ReadModels()
    for record in log.records:
        replay.apply(record)
    assert replay.to_dict() == {
        **canonical(
            hosts=at_once.hosts,
            ledger=at_once.ledger,
            allocations=at_once.allocations,
            users=at_once.users,
            jobs=at_once.jobs,
        ),
        "sessions": {},
    }
    assert replay.folded == len(log.records)
    assert len(replay.skipped) == fold.skipped.count
