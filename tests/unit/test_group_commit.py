"""The version checks of a group commit (libs/events/group_commit.py), without a database."""

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

from potluck.events.group_commit import (
    EncodedEvent,
    EncodedStream,
    PendingAppend,
    check_versions,
    log_rows,
)


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
    drawn = [(10 + n, uuid4(), datetime.now(UTC)) for n in range(5)]
    rows, recorded = log_rows(accepted, drawn)
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (10, "s", 3),
        (11, "s", 4),
        (12, "s", 5),
        (13, "t", 1),
        (14, "s", 6),
    ]
    assert [r[1] for r in rows] == [d[1] for d in drawn]  # events without an id take the drawn one
    assert [[(e.position, e.stream, e.version) for e in r] for r in recorded] == [
        [(10, "s", 3)],
        [(11, "s", 4), (12, "s", 5), (13, "t", 1)],
        [(14, "s", 6)],
    ]
