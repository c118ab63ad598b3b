"""Moving old events out of the hot `events` table into `events_archive` (migration 0005).

The log only grows; appends, followers and the version checks only ever need its recent
end. Archiving moves old events, in bounded batches, to a table of the same shape, and
every read (store.read_all, read_stream, contains) reads both through the view
`all_events`, so replay, a service's start and a follower behind the boundary still see
every event in position order.

What may move, and why it keeps every invariant of the log:

- Never a stream's latest event. An append checks a stream's version as max(version) in
  `events` under the table lock, and `events` keeps (stream, version) unique. With each
  stream's head left there, both still cover every stream: an append to a stream whose
  early events are archived draws head + 1, a stale expected version is refused as before,
  and `NO_STREAM` is refused for a stream that exists only partly in the archive. The log's
  last event is its stream's head too, so the head position is still `max(position)` of
  `events`. The cost: one event per stream stays hot (a released allocation keeps its
  last event), which bounds what a log of many short streams gives up.
- Only positions at or below a boundary: the caller's (`before`, `older_than`) and never
  past what a known reader has taken (`relay_checkpoints`, `consumer_positions`): events
  not yet published by the relay stay hot. Readers go through `all_events` anyway, so a
  reader the archiver cannot know of (an in-memory follower) still misses nothing.
- Each batch is one statement in one transaction: delete from `events` and insert what was
  deleted into `events_archive`. A crash rolls the batch back whole; a rerun starts from
  what is still hot, so nothing is lost or doubled. One archiver at a time (an advisory lock).
- The batch's DELETE conflicts with the append's `LOCK TABLE events IN EXCLUSIVE MODE`, so
  appends wait for a batch (and a batch for them); batches are kept small for that.

Idempotent appends (an event id seen before is refused) are checked by the unique event_id
of `events` only: an append retrying an event archived since would be logged twice. So events
younger than `KEEP_RECENT_S` (the longest a JetStream stream keeps a message, so the longest
a message can still be redelivered and turned into an event again) never move, whatever the
operator asks; `keep_recent` lowers it only where no retry can come (tests).
"""

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog

from potluck.events.bus import STREAMS
from potluck.events.store import EventStore

__all__ = ["KEEP_RECENT_S", "ArchiveError", "ArchivePlan", "ArchiveResult", "archive", "plan_archive"]

log = structlog.get_logger(__name__)

#: Events younger than this stay hot: the longest any stream keeps a message to redeliver.
KEEP_RECENT_S = max(spec.max_age_s for spec in STREAMS)

#: One archiver at a time ("potluck" + "arch").
_ARCHIVE_LOCK = 0x706F746C61726368

_COLUMNS = "position, event_id, stream, version, type, schema_version, data, metadata, recorded_at"

# Candidates in position order, each with a later version of its stream still hot (so a
# stream's head never moves; it has none). The (stream, version) index answers each probe.
_MOVABLE = """
SELECT e.position, e.stream FROM events e
WHERE e.position > $1 AND e.position <= $2
  AND EXISTS (SELECT 1 FROM events n WHERE n.stream = e.stream AND n.version > e.version)
"""

_MOVE = f"""
WITH chosen AS ({_MOVABLE} ORDER BY e.position LIMIT $3),
moved AS (
    DELETE FROM events e USING chosen c WHERE e.position = c.position
    RETURNING {", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))}
),
kept AS (
    INSERT INTO events_archive ({_COLUMNS}) SELECT {_COLUMNS} FROM moved ORDER BY position
    RETURNING position
)
SELECT count(*), coalesce(max(position), 0) FROM kept
"""

#: Progress after each batch: events moved so far, the position reached, the boundary.
Progress = Callable[[int, int, int], None]


class ArchiveError(Exception):
    """Bad input or a state that forbids archiving; nothing was moved."""


@dataclass(frozen=True)
class ArchivePlan:
    """What an archive run would move: events at positions <= `boundary` that are not their
    stream's latest. `bound_by` says which limit set the boundary."""

    head: int
    boundary: int
    bound_by: str
    movable: int | None = None
    streams: int | None = None
    hot: int | None = None
    archived: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "head": self.head,
            "boundary": self.boundary,
            "bound_by": self.bound_by,
            "movable": self.movable,
            "streams": self.streams,
            "hot": self.hot,
            "archived": self.archived,
        }


@dataclass(frozen=True)
class ArchiveResult:
    plan: ArchivePlan
    moved: int
    batches: int

    def as_dict(self) -> dict[str, object]:
        return {**self.plan.as_dict(), "moved": self.moved, "batches": self.batches}


def _check_age(older_than: float | None) -> None:
    if older_than is not None and (not math.isfinite(older_than) or older_than < 0):
        raise ArchiveError(f"the age must be zero or more (e.g. 30d), not {older_than}")


async def plan_archive(
    store: EventStore,
    *,
    before: int | None = None,
    older_than: float | None = None,
    keep_recent: float = KEEP_RECENT_S,
    count: bool = True,
) -> ArchivePlan:
    """The boundary for events below position `before` and recorded more than `older_than`
    seconds ago (either or both), capped by the known readers and by `keep_recent` (events
    younger stay); with `count`, how much would move.

    ArchiveError for neither limit, a position past the head or below 1, a negative age.
    """
    if before is None and older_than is None:
        raise ArchiveError("say what to archive: an age (e.g. --older-than 30d) or a position (--before N)")
    _check_age(older_than)
    head = await store.head_position()
    if before is not None:
        if before < 1:
            raise ArchiveError(f"--before {before}: positions start at 1")
        if before > head + 1:
            raise ArchiveError(
                f"--before {before} is past the end of the log (the head is at {head}); "
                f"at most {head + 1} archives everything that may move"
            )
    limits: list[tuple[int, str]] = [(head, "the head of the log")]
    if before is not None:
        limits.append((before - 1, f"--before {before}"))
    _check_age(keep_recent)
    ages = [(keep_recent, "--keep-recent, the longest any stream may redeliver a message")]
    if older_than is not None:
        ages.append((older_than, "the age"))
    async with store.pool.acquire() as conn:
        for age, why in ages:
            # The first event recorded at or after the cutoff (recorded_at is drawn under the
            # append's table lock, so it follows position order); everything before it is older.
            cutoff = await conn.fetchval("SELECT now() - $1::interval", timedelta(seconds=age))
            first_young = await conn.fetchval(
                "SELECT position FROM events WHERE recorded_at >= $1 ORDER BY recorded_at LIMIT 1", cutoff
            )
            if first_young is not None:
                when = cutoff.isoformat(timespec="seconds")
                limits.append((int(first_young) - 1, f"{why}: events recorded before {when}"))
        readers = await conn.fetch(
            "SELECT 'relay ' || name, position FROM relay_checkpoints "
            "UNION ALL SELECT 'consumer ' || consumer, position FROM consumer_positions"
        )
        for name, at in readers:
            limits.append((int(at), f"the {name}, which has read the log to position {at}"))
        boundary, bound_by = min(limits, key=lambda limit: limit[0])
        boundary = max(boundary, 0)
        if not count:
            return ArchivePlan(head, boundary, bound_by)
        row = await conn.fetchrow(f"SELECT count(*), count(DISTINCT stream) FROM ({_MOVABLE}) m", 0, boundary)
        hot = await conn.fetchval("SELECT count(*) FROM events")
        archived = await conn.fetchval("SELECT count(*) FROM events_archive")
    assert row is not None
    return ArchivePlan(head, boundary, bound_by, int(row[0]), int(row[1]), int(hot), int(archived))


async def archive(
    store: EventStore,
    plan: ArchivePlan,
    *,
    batch_size: int = 500,
    rest: float = 1.0,
    progress: Progress | None = None,
) -> ArchiveResult:
    """Move what `plan` allows, `batch_size` events per transaction, oldest first, resting
    `rest` times as long as each batch took before the next.

    Appends wait for a batch in progress (bench/README.md, "archive"): the batch size bounds
    how long one waits, the rest how many do. Safe to interrupt anywhere and to rerun: a
    batch moves whole or not at all.
    """
    if batch_size < 1:
        raise ArchiveError(f"the batch size must be at least 1, not {batch_size}")
    if not math.isfinite(rest) or rest < 0:
        raise ArchiveError(f"the rest between batches must be zero or more, not {rest}")
    moved = batches = 0
    # A connection of its own, not the pool's: the session lock goes with it when it closes,
    # whatever ends the run (the pool keeps sessions as they are; store.py `_keep_session`).
    conn = await asyncpg.connect(store.dsn)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _ARCHIVE_LOCK):
            raise ArchiveError("another archive is running on this log; wait for it to finish")
        position = 0
        while True:
            started = time.monotonic()
            async with conn.transaction():
                row = await conn.fetchrow(_MOVE, position, plan.boundary, batch_size)
            assert row is not None
            n, last = int(row[0]), int(row[1])
            if n == 0:
                break
            moved += n
            batches += 1
            position = last
            log.debug("archive.batch", moved=n, position=last, boundary=plan.boundary)
            if progress is not None:
                progress(moved, position, plan.boundary)
            await asyncio.sleep(rest * (time.monotonic() - started))
    finally:
        log.info("archive.ended", moved=moved, batches=batches, boundary=plan.boundary)
        await conn.close()
    return ArchiveResult(plan, moved, batches)
