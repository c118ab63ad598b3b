"""The version checks of a group commit (libs/events/group_commit.py), without a database."""

import asyncio

from potluck.events.group_commit import (
    EncodedEvent,
    EncodedStream,
    PendingAppend,
    check_versions,
    insert_columns,
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
    ids, streams, versions, *_ = insert_columns(accepted)
    assert list(zip(streams, versions, strict=True)) == [("s", 3), ("s", 4), ("s", 5), ("t", 1), ("s", 6)]
    assert ids == [None] * 5
