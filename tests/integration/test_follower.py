"""Following the log under concurrent writers and a Postgres restart."""

import asyncio
import random
from uuid import UUID

from potluck.events import TRANSIENT_DB_ERRORS, EventStore, LogFollower, RecordedEvent
from potluck.localstack import PostgresServer
from tests.fixtures.sample_events import ThingHappened

WRITERS = 8
TOTAL = 10_000


async def _writer(store: EventStore, writer: int, count: int, seed: int) -> list[UUID]:
    rng = random.Random(seed)
    ids: list[UUID] = []
    done = 0
    while done < count:
        size = min(rng.randint(1, 40), count - done)
        stream = f"thing-{writer}-{rng.randint(0, 20)}"
        recorded = await store.append(
            stream, [ThingHappened(thing_id=stream, count=done + i) for i in range(size)]
        )
        ids += [r.event_id for r in recorded]
        done += size
        if rng.random() < 0.2:
            await asyncio.sleep(0)
    return ids


async def _follow(follower: LogFollower, want: int, seen: list[RecordedEvent]) -> None:
    async for event in follower.events():
        seen.append(event)
        if len(seen) >= want:
            return


async def test_follower_sees_every_event_of_concurrent_writers_once_in_order(
    store: EventStore,
) -> None:
    """8 writers append 10,000 events in batches while a follower reads: none skipped or doubled."""
    seen: list[RecordedEvent] = []
    follower = LogFollower(store, batch_size=500)
    following = asyncio.create_task(_follow(follower, TOTAL, seen))
    written = await asyncio.gather(*(_writer(store, w, TOTAL // WRITERS, w) for w in range(WRITERS)))
    async with asyncio.timeout(60):
        await following

    all_ids = [i for ids in written for i in ids]
    assert len(all_ids) == TOTAL
    positions = [e.position for e in seen]
    assert positions == sorted(positions)
    assert len(set(positions)) == TOTAL
    assert sorted(e.event_id for e in seen) == sorted(all_ids)
    # Within each stream, versions arrive 1, 2, 3, ...
    by_stream: dict[str, list[int]] = {}
    for e in seen:
        by_stream.setdefault(e.stream, []).append(e.version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_stream.values())


async def test_follower_resumes_after_postgres_restarts(own_postgres: PostgresServer) -> None:
    """Postgres restarts under a running follower: it reconnects and loses nothing."""
    store = await EventStore.open(own_postgres.url)
    seen: list[RecordedEvent] = []
    follower = LogFollower(store, poll_interval=0.2, max_backoff=0.5)
    following = asyncio.create_task(_follow(follower, 300, seen))
    try:
        await store.append("thing-a", [ThingHappened(thing_id="a", count=i) for i in range(100)])
        while len(seen) < 100:
            await asyncio.sleep(0.05)

        await asyncio.to_thread(own_postgres.restart)

        for i in range(200):
            for attempt in range(50):
                try:
                    await store.append("thing-b", [ThingHappened(thing_id="b", count=i)])
                    break
                except TRANSIENT_DB_ERRORS as exc:  # the pool may hand out a dead connection once
                    if attempt == 49:
                        raise AssertionError(f"appends never recovered after the restart: {exc!r}") from exc
                    await asyncio.sleep(0.1)
        async with asyncio.timeout(30):
            await following
    finally:
        following.cancel()
        await store.close()
    assert [e.position for e in seen] == sorted({e.position for e in seen})
    assert len(seen) == 300
    assert [e.stream for e in seen].count("thing-b") == 200
