"""Archiving old events (potluck.events.archive) on a real Postgres: reads stay whole,
appends keep their version checks, an interrupted archive reruns exactly."""

import asyncio
import os
import signal
import sys
from uuid import UUID

import pytest

from potluck.events import (
    NO_STREAM,
    EventStore,
    LogFollower,
    RecordedEvent,
    StreamAppend,
    WrongExpectedVersion,
)
from potluck.events.archive import _ARCHIVE_LOCK, ArchiveError, ArchivePlan, archive, plan_archive
from potluck.events.snapshots import Snapshots
from tests.fixtures.sample_events import ThingHappened


def thing(n: int) -> ThingHappened:
    return ThingHappened(thing_id=f"t{n}", count=n)


async def fill(store: EventStore, streams: int = 30, long: int = 40, bulk: int = 0) -> list[RecordedEvent]:
    """A log of one long stream and many short ones, interleaved, then `bulk` streams of two
    events (appended 500 streams at a time); the whole log, read back."""
    for n in range(long):
        await store.append("long-1", [thing(n)])
        if n < streams:
            await store.append(
                f"short-{n}", [thing(n), thing(n + 1), thing(n + 2)], expected_version=NO_STREAM
            )
    for first in range(0, bulk, 500):
        await store.append_streams(
            [
                StreamAppend(f"bulk-{n}", [thing(n), thing(n + 1)])
                for n in range(first, min(bulk, first + 500))
            ]
        )
    return await store.read_all(0, 100_000)


async def tables(store: EventStore) -> tuple[list[int], list[int]]:
    hot = [r[0] for r in await store.pool.fetch("SELECT position FROM events ORDER BY position")]
    cold = [r[0] for r in await store.pool.fetch("SELECT position FROM events_archive ORDER BY position")]
    return hot, cold


async def assert_whole(store: EventStore, original: list[RecordedEvent]) -> None:
    """Every event once, in one table or the other, read back as it was; every stream's head hot."""
    hot, cold = await tables(store)
    assert not set(hot) & set(cold)
    assert sorted(hot + cold) == [e.position for e in original]
    assert await store.read_all(0, 100_000) == original
    heads = await store.pool.fetch("SELECT stream, max(version) FROM events GROUP BY stream")
    assert {r[0]: r[1] for r in heads} == {e.stream: e.version for e in original}


async def test_archive_then_every_read_equals_the_original(store: EventStore) -> None:
    """Fill a log, snapshot the long stream at version 10, archive everything that may move in
    small batches. Must hold: most events moved, every stream's latest event stayed hot,
    read_all (whole and paged across the boundary), read_stream, contains, the head and a
    follower from 0 give exactly what they gave before, and the snapshot still loads with
    the rest of its stream."""
    original = await fill(store)
    streams = sorted({e.stream for e in original})
    before = {s: await store.read_stream(s) for s in streams}
    snapshots = Snapshots(store, "test-long", 1, int)
    await snapshots.save("long-1", 10, 10)

    plan = await plan_archive(store, keep_recent=0, before=original[-1].position + 1)
    assert (plan.boundary, plan.movable, plan.streams) == (original[-1].position, len(original) - 31, 31)
    result = await archive(store, plan, batch_size=7)
    assert result.moved == plan.movable
    assert result.batches == -(-plan.movable // 7)

    await assert_whole(store, original)
    hot, _ = await tables(store)
    assert len(hot) == len(streams)
    paged: list[RecordedEvent] = []
    while batch := await store.read_all(paged[-1].position if paged else 0, 9):
        paged.extend(batch)
    assert paged == original
    assert {s: await store.read_stream(s) for s in streams} == before
    assert await store.read_stream("long-1", after_version=38) == before["long-1"][38:]
    assert await store.head_position() == original[-1].position
    assert await store.contains(UUID(str(original[0].event_id)))
    followed: list[RecordedEvent] = []
    from_zero = LogFollower(store, after_position=0, batch_size=50)
    async for batch in from_zero.batches():
        followed.extend(batch)
        if followed[-1].position == original[-1].position:
            break
    await from_zero.close()
    assert followed == original
    snap = await snapshots.load("long-1")
    assert snap is not None
    assert snap.version == 10
    assert await store.read_stream("long-1", after_version=snap.version) == before["long-1"][10:]

    again = await plan_archive(store, keep_recent=0, before=original[-1].position + 1)
    assert again.movable == 0
    assert (await archive(store, again)).moved == 0


async def test_appends_to_archived_streams_keep_their_version_checks(store: EventStore) -> None:
    """Archive the long stream up to its head, then: a stale expected version (one now in the
    archive) and NO_STREAM are refused; two stores race with the same expected version and
    exactly one wins; then 60 appends from two stores race with an archive of the same streams
    running in small batches, while a follower reads from position 0 in batches of 4. Must
    hold: versions stay 1..N with no gap or repeat across both tables, nothing lost, the
    archive moved something, the follower saw every event once, in order."""
    original = await fill(store, streams=5, long=20)
    await archive(
        store, await plan_archive(store, keep_recent=0, before=original[-1].position + 1), batch_size=5
    )
    assert await store.stream_version("long-1") == 20

    with pytest.raises(WrongExpectedVersion) as stale:
        await store.append("long-1", [thing(99)], expected_version=3)
    assert (stale.value.expected, stale.value.actual) == (3, 20)
    with pytest.raises(WrongExpectedVersion):
        await store.append("short-0", [thing(99)], expected_version=NO_STREAM)

    other = await EventStore.open(store.dsn, migrate=False)
    try:
        raced = await asyncio.gather(
            store.append("long-1", [thing(21)], expected_version=20),
            other.append("long-1", [thing(21)], expected_version=20),
            return_exceptions=True,
        )
        assert sum(isinstance(r, list) for r in raced) == 1
        assert sum(isinstance(r, WrongExpectedVersion) for r in raced) == 1

        async def appends(s: EventStore, n: int) -> None:
            for i in range(30):
                await s.append("long-1" if i % 2 else f"short-{i % 5}", [thing(n * 100 + i)])

        async def archiving() -> int:
            moved = 0
            for _ in range(5):
                plan = await plan_archive(store, keep_recent=0, before=await store.head_position() + 1)
                moved += (await archive(store, plan, batch_size=3)).moved
                await asyncio.sleep(0.01)
            return moved

        followed: list[RecordedEvent] = []
        follower = LogFollower(store, after_position=0, batch_size=4, poll_interval=0.1)

        async def follow() -> None:
            async for batch in follower.batches():
                followed.extend(batch)

        following = asyncio.create_task(follow())
        _, _, moved = await asyncio.gather(appends(store, 1), appends(other, 2), archiving())
        head = await store.head_position()
        for _ in range(300):
            if followed and followed[-1].position >= head:
                break
            await asyncio.sleep(0.05)
        following.cancel()
        await follower.close()
    finally:
        await other.close()
    assert moved > 0
    everything = await store.read_all(0, 100_000)
    assert len(everything) == len(original) + 1 + 60
    assert followed == everything
    for stream in {e.stream for e in everything}:
        versions = [e.version for e in await store.read_stream(stream)]
        assert versions == list(range(1, len(versions) + 1)), stream
    await assert_whole(store, everything)


async def test_a_killed_archive_loses_and_doubles_nothing_and_a_rerun_finishes(
    store: EventStore, database_url: str
) -> None:
    """`potluck ops archive` moving one event per transaction is killed (SIGKILL) mid-run; a
    second run is stopped by its own progress hook between batches. Must hold after each:
    every event in exactly one table, reads equal the original; a final rerun moves exactly
    the rest."""
    original = await fill(store, streams=10, long=20, bulk=3000)
    movable = (await plan_archive(store, keep_recent=0, before=original[-1].position + 1)).movable
    assert movable is not None
    env = {**os.environ, "POTLUCK_DATABASE_URL": database_url}
    before = str(original[-1].position + 1)
    run = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-m",
            "potluck.ops.cli",
            "archive",
            "--before",
            before,
            "--keep-recent",
            "0s",
            "--batch-size",
            "1",
            "-q",
        ),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(1500):
            if await store.pool.fetchval("SELECT count(*) FROM events_archive") >= 10:
                break
            assert run.returncode is None, await run.stderr.read() if run.stderr else ""
            await asyncio.sleep(0.02)
    finally:
        run.send_signal(signal.SIGKILL)
        await run.wait()
    await assert_whole(store, original)
    _, cold = await tables(store)
    assert 10 <= len(cold) < movable

    class Stop(Exception):
        pass

    def stop_after_two(moved: int, position: int, boundary: int) -> None:
        if moved >= 2 * 5:
            raise Stop

    with pytest.raises(Stop):
        await archive(
            store,
            await plan_archive(store, keep_recent=0, before=original[-1].position + 1),
            batch_size=5,
            progress=stop_after_two,
        )
    await assert_whole(store, original)
    _, cold_after = await tables(store)
    assert len(cold_after) == len(cold) + 10

    rest = await plan_archive(store, keep_recent=0, before=original[-1].position + 1)
    assert rest.movable == movable - len(cold_after)
    assert (await archive(store, rest, batch_size=50)).moved == rest.movable
    await assert_whole(store, original)
    _, done = await tables(store)
    assert len(done) == movable


async def test_bad_input_and_readers_bound_what_moves(store: EventStore) -> None:
    """No limit, a position past the head or below 1, a negative age, another archive running:
    a clear ArchiveError and nothing moved. A relay checkpoint caps the boundary (and is
    named); an age that every event is younger than moves nothing, and by default nothing
    younger than the streams' longest redelivery window moves."""
    original = await fill(store, streams=5, long=10)
    head = original[-1].position
    for kwargs, words in [
        ({}, "say what to archive"),
        ({"before": head + 2}, "past the end of the log"),
        ({"before": 0}, "positions start at 1"),
        ({"older_than": -1.0}, "zero or more"),
    ]:
        with pytest.raises(ArchiveError, match=words):
            await plan_archive(store, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ArchiveError, match="batch size"):
        await archive(store, ArchivePlan(head, head, "test"), batch_size=0)
    async with store.pool.acquire() as other_archiver:
        await other_archiver.execute("SELECT pg_advisory_lock($1)", _ARCHIVE_LOCK)
        with pytest.raises(ArchiveError, match="another archive is running"):
            await archive(store, await plan_archive(store, keep_recent=0, before=head + 1))
        await other_archiver.execute("SELECT pg_advisory_unlock($1)", _ARCHIVE_LOCK)
    assert (await tables(store))[1] == []

    young = await plan_archive(store, keep_recent=0, older_than=3600)
    assert young.boundary == 0
    assert young.movable == 0
    assert young.bound_by.startswith("the age")
    # By default nothing a stream may still redeliver moves, whatever the position asked.
    recent = await plan_archive(store, before=head + 1)
    assert (recent.boundary, recent.movable) == (0, 0)
    assert recent.bound_by.startswith("--keep-recent, the longest any stream may redeliver"), recent.bound_by
    with pytest.raises(ArchiveError, match="zero or more"):
        await plan_archive(store, before=head + 1, keep_recent=-1.0)

    await store.pool.execute("INSERT INTO relay_checkpoints (name, position) VALUES ('main', $1)", head // 2)
    capped = await plan_archive(store, keep_recent=0, before=head + 1)
    assert capped.boundary == head // 2
    assert "relay main" in capped.bound_by
    await archive(store, capped)
    _, cold = await tables(store)
    assert cold
    assert max(cold) <= head // 2
    await assert_whole(store, original)
