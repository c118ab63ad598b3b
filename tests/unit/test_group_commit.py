"""The version checks of a group commit (libs/events/group_commit.py), without a database."""

import asyncio
from datetime import UTC, datetime
from uuid import RFC_4122, UUID

from potluck.events.group_commit import (
    EncodedEvent,
    EncodedStream,
    PendingAppend,
    check_versions,
    log_rows,
)
from potluck.events.ids import random_ids


def event(n: int) -> EncodedEvent:
    return EncodedEvent(None, "ThingHappened", 1, f'{{"n": {n}}}', {}, "{}")


def pending(loop: asyncio.AbstractEventLoop, *streams: tuple[str, int | None, int]) -> PendingAppend:
    return PendingAppend(
        [
            EncodedStream(name, [event(i) for i in range(count)], expected)
            for name, expected, count in streams
        ],
        loop.create_future(),
    )


def test_each_append_is_checked_against_the_log_as_the_appends_before_it_leave_it() -> None:
    loop = asyncio.new_event_loop()
    try:
        first = pending(loop, ("s", 2, 1))  # s is at 2
        chained = pending(loop, ("s", 3, 2), ("t", 0, 1))  # counts on `first`
        stale = pending(loop, ("s", 2, 1))  # read s at 2, like `first`: conflicts
        free = pending(loop, ("s", None, 1))  # any version
        torn = pending(loop, ("u", 0, 1), ("s", 1, 1))  # one stream's conflict refuses all of it
        accepted, refused = check_versions([first, chained, stale, free, torn], {"s": 2})
    finally:
        loop.close()

    assert [(p, bases) for p, bases in accepted] == [(first, [2]), (chained, [3, 0]), (free, [5])]
    assert [(p, (e.stream, e.expected, e.actual)) for p, e in refused] == [
        (stale, ("s", 2, 5)),
        (torn, ("s", 1, 6)),
    ]
    rows, recorded = log_rows(accepted, 10, datetime.now(UTC))
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (10, "s", 3),
        (11, "s", 4),
        (12, "s", 5),
        (13, "t", 1),
        (14, "s", 6),
    ]
    ids = [r[1] for r in rows]  # events without an id get a random one
    assert len(set(ids)) == 5
    assert all(i.version == 4 for i in ids)
    assert [[(e.position, e.stream, e.version) for e in r] for r in recorded] == [
        [(10, "s", 3)],
        [(11, "s", 4), (12, "s", 5), (13, "t", 1)],
        [(14, "s", 6)],
    ]


def test_random_ids_are_distinct_version_4_uuids_as_uuid4_makes() -> None:
    """Draw 2,000 ids in one call. Must hold: all distinct, version 4, the RFC 4122 variant,
    each a uuid.UUID that equals (and hashes as) the same id parsed from its text."""
    ids = random_ids(2000)
    assert len(set(ids)) == 2000
    assert {(i.version, i.variant) for i in ids} == {(4, RFC_4122)}
    assert all(isinstance(i, UUID) and i == UUID(str(i)) and hash(i) == hash(UUID(str(i))) for i in ids)
    assert random_ids(0) == []
