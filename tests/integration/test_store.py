"""The Postgres event store on a real server."""

import asyncio
import json
from uuid import uuid4

import pytest

from potluck.events import (
    NO_STREAM,
    DuplicateEvent,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    WrongExpectedVersion,
)
from tests.fixtures.sample_events import HostThingHappened, ThingHappened, sample
from tests.helpers import append_raw_row


def thing(n: int) -> ThingHappened:
    return ThingHappened(thing_id=f"t{n}", count=n)


async def test_append_then_read_stream_and_all(store: EventStore) -> None:
    """Append to two streams, read back by stream and from the whole log. Must hold: versions
    and positions in order, the decoded events as appended, and what append returned equal
    to the rows read back (position, id, time and all)."""
    recorded = await store.append("thing-1", [thing(1), thing(2)], expected_version=NO_STREAM)
    assert [r.version for r in recorded] == [1, 2]
    assert recorded[0].position < recorded[1].position
    await store.append("thing-2", [thing(3)], expected_version=NO_STREAM)

    stream = await store.read_stream("thing-1")
    assert [sample.decode_record(r) for r in stream] == [thing(1), thing(2)]
    everything = await store.read_all(0, 10)
    assert [r.stream for r in everything] == ["thing-1", "thing-1", "thing-2"]
    assert await store.stream_version("thing-1") == 2
    assert await store.head_position() == everything[-1].position
    assert await store.read_all(everything[0].position, 1) == [everything[1]]

    # What append hands back (positions, ids and times drawn before the COPY) is what was logged.
    # (data compared parsed: jsonb keeps its own key order and spacing.)
    def fields(r: RecordedEvent) -> tuple[object, ...]:
        return (r.position, r.event_id, r.stream, r.version, r.type, r.data, r.metadata, r.recorded_at)

    assert [fields(r) for r in everything[:2]] == [fields(r) for r in recorded]


async def test_reading_past_the_last_position_a_bigint_holds_reads_what_there_is(store: EventStore) -> None:
    """Tried: positions past 2**63 - 1 (a user's `?at=` reaches read_all as it is). Must hold:
    `until` past it is the whole log and `after` past it is nothing, no driver error."""
    await store.append("thing-9", [thing(9)], expected_version=NO_STREAM)
    everything = await store.read_all(0, 10)
    assert await store.read_all(0, 10, until_position=10**30) == everything
    assert await store.read_all(2**63 - 1, 10) == []
    assert await store.read_all(10**30, 10, until_position=10**31) == []


@pytest.mark.parametrize("writers", ["one process", "two processes"])
async def test_two_writers_with_the_same_expected_version_exactly_one_wins(
    store: EventStore, writers: str
) -> None:
    """Both read version 1 and append; one must get the conflict naming stream and versions.
    From one process both appends share a group commit; from two they race for the table lock."""
    other = store if writers == "one process" else await EventStore.open(store.dsn, migrate=False)
    try:
        await store.append("thing-x", [thing(0)], expected_version=NO_STREAM)
        results = await asyncio.gather(
            store.append("thing-x", [thing(1)], expected_version=1),
            other.append("thing-x", [thing(2)], expected_version=1),
            return_exceptions=True,
        )
    finally:
        if other is not store:
            await other.close()
    conflicts = [r for r in results if isinstance(r, WrongExpectedVersion)]
    wins = [r for r in results if isinstance(r, list)]
    assert len(conflicts) == 1
    assert len(wins) == 1
    assert (conflicts[0].stream, conflicts[0].expected, conflicts[0].actual) == ("thing-x", 1, 2)
    assert "thing-x" in str(conflicts[0])
    assert "expected 1" in str(conflicts[0])
    assert "actual 2" in str(conflicts[0])
    assert await store.stream_version("thing-x") == 2


async def test_concurrent_appends_share_transactions_and_each_keeps_its_own_outcome(
    store: EventStore,
) -> None:
    """50 appends at once from one process: 40 to new streams and 10 racing for one version of
    a shared stream. The new ones all land, exactly one racer wins, and they went out in fewer
    transactions than appends (rows of one transaction share their `xmin`). Then 10 appends each
    carrying an event id the log already holds, among 10 good ones: each duplicate is refused
    alone and the good ones land."""
    taken = uuid4()
    await store.append("thing-shared", [NewEvent(thing(0), event_id=taken)], expected_version=NO_STREAM)
    fresh = [
        store.append(f"thing-new-{n}", [thing(n), thing(n + 1)], expected_version=NO_STREAM)
        for n in range(40)
    ]
    racers = [store.append("thing-shared", [thing(n)], expected_version=1) for n in range(10)]
    results = await asyncio.gather(*fresh, *racers, return_exceptions=True)

    assert all(isinstance(r, list) and [e.version for e in r] == [1, 2] for r in results[:40]), results
    raced = results[40:]
    assert sum(isinstance(r, list) for r in raced) == 1
    assert all(
        isinstance(r, WrongExpectedVersion) and r.actual == 2 for r in raced if not isinstance(r, list)
    )
    transactions = await store.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM events")
    assert 1 < transactions < 1 + 41

    dupes = [store.append(f"thing-dupe-{n}", [NewEvent(thing(n), event_id=taken)]) for n in range(10)]
    good = [store.append(f"thing-good-{n}", [thing(n)], expected_version=NO_STREAM) for n in range(10)]
    results = await asyncio.gather(*dupes, *good, return_exceptions=True)
    assert all(isinstance(r, DuplicateEvent) and r.event_ids == [taken] for r in results[:10]), results
    assert all(isinstance(r, list) for r in results[10:]), results

    everything = await store.read_all(0, 1000)
    assert len(everything) == 1 + 80 + 1 + 10
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    assert not [e for e in everything if e.stream.startswith("thing-dupe-")]


async def test_an_append_whose_caller_gave_up_still_lands_whole(store: EventStore) -> None:
    """A caller cancelled while its append is queued or committing: the append is not torn;
    it commits (as a COMMIT already sent would) and the next append sees it."""
    waiting = asyncio.ensure_future(store.append("thing-c", [thing(1), thing(2)], expected_version=NO_STREAM))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    after = await store.append("thing-c", [thing(3)], expected_version=2)
    assert [e.version for e in after] == [3]


async def test_multi_stream_append_is_all_or_nothing(store: EventStore) -> None:
    """One stream's wrong version refuses the whole batch: no stream gains an event."""
    await store.append("host-a", [HostThingHappened(host_id="a", value=1)], expected_version=NO_STREAM)
    head = await store.head_position()
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append_streams(
            [
                StreamAppend("alloc-1", [thing(1)], expected_version=NO_STREAM),
                StreamAppend("host-a", [HostThingHappened(host_id="a", value=2)], expected_version=0),
            ]
        )
    assert info.value.stream == "host-a"
    assert await store.head_position() == head
    assert await store.read_stream("alloc-1") == []

    done = await store.append_streams(
        [
            StreamAppend("alloc-1", [thing(1)], expected_version=NO_STREAM),
            StreamAppend("host-a", [HostThingHappened(host_id="a", value=2)], expected_version=1),
        ]
    )
    assert [(r.stream, r.version) for r in done] == [("alloc-1", 1), ("host-a", 2)]


async def test_a_duplicate_event_id_is_refused_and_nothing_of_the_batch_is_written(
    store: EventStore,
) -> None:
    """A redelivered message derives the same event id; its second append must not log anything."""
    first = uuid4()
    await store.append("thing-d", [NewEvent(thing(1), event_id=first)])
    with pytest.raises(DuplicateEvent) as info:
        await store.append("thing-e", [NewEvent(thing(2)), NewEvent(thing(3), event_id=first)])
    assert info.value.event_ids == [first]
    assert await store.read_stream("thing-e") == []
    assert await store.contains(first)


async def test_append_inside_a_callers_transaction_rolls_back_with_it(store: EventStore) -> None:
    async def append_then_fail() -> None:
        async with store.pool.acquire() as conn, conn.transaction():
            await store.append("thing-t", [thing(1)], connection=conn)
            raise RuntimeError("the caller's effect failed")

    with pytest.raises(RuntimeError):
        await append_then_fail()
    assert await store.read_stream("thing-t") == []


async def test_metadata_and_routing_key_are_stored(store: EventStore) -> None:
    [rec] = await store.append(
        "host-h9",
        [HostThingHappened(host_id="h9", value=1)],
        metadata={"actor": "op", "correlation_id": "c1"},
    )
    [back] = await store.read_stream("host-h9")
    assert back.metadata == rec.metadata
    assert back.metadata["routing_key"] == "h9"
    assert back.metadata["actor"] == "op"
    # The relay copies a logged event's metadata text into a header without parsing it.
    assert json.loads(back.metadata_json) == json.loads(rec.metadata_json) == rec.metadata


async def test_expected_versions_are_checked_against_existing_and_new_streams_alike(
    store: EventStore,
) -> None:
    """A multi-stream append naming a stream with history and one with none: each is checked
    against its own newest version (0 for the new one), and a wrong guess names the actual one."""
    await store.append("thing-old", [thing(1), thing(2), thing(3)], expected_version=NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as wrong:
        await store.append_streams(
            [StreamAppend("thing-old", [thing(4)], 3), StreamAppend("thing-new", [thing(5)], 1)]
        )
    assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == ("thing-new", 1, 0)
    recorded = await store.append_streams(
        [StreamAppend("thing-old", [thing(4)], 3), StreamAppend("thing-new", [thing(5)], NO_STREAM)]
    )
    assert [(r.stream, r.version) for r in recorded] == [("thing-old", 4), ("thing-new", 1)]


async def test_migrations_run_once(store: EventStore) -> None:
    assert await store.migrate() == []
    names = await store.pool.fetch("SELECT name FROM schema_migrations")
    assert sorted(n[0] for n in names) == [
        "0001_event_log.sql",
        "0002_notify_per_statement.sql",
        "0003_snapshots.sql",
        "0004_checkpoints.sql",
        "0005_events_archive.sql",
    ]


async def test_a_stream_may_appear_once_per_append(store: EventStore) -> None:
    with pytest.raises(ValueError, match="once"):
        await store.append_streams([StreamAppend("s-1", [thing(1)]), StreamAppend("s-1", [thing(2)])])


async def test_a_rows_metadata_that_is_not_an_object_reads_as_none(store: EventStore) -> None:
    """Tried: a log row whose metadata is a JSON array (a hand-made INSERT, another writer's row),
    read back as every reader reads it.
    Must hold: its metadata is {} and its JSON "{}" (before, the relay, `ops events show` and
    anything asking `metadata.get(...)` raised on it); an object's text is kept as it is."""
    odd = await append_raw_row(store, "thing-1", "ThingHappened", '{"thing_id": "a", "count": 1}', "[1, 2]")
    fine = await append_raw_row(
        store, "thing-1", "ThingHappened", '{"thing_id": "a", "count": 2}', '{"a": 1}'
    )
    records = {r.position: r for r in await store.read_stream("thing-1")}
    assert records[odd].metadata == {}
    assert records[odd].metadata_json == "{}"
    assert records[fine].metadata == {"a": 1}
    assert records[fine].metadata_json == '{"a": 1}'
