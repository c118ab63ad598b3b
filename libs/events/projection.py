"""One way to fold the log into state: a projection, the Fold that feeds it, and what an
unreadable event does.

A *projection* is pure: it names the stream categories it reads and folds one
decoded event at a time (`apply(event, record)`); it does no I/O and never
decides. A `Fold` owns everything around it, the same in every service and in
the operator tools: it decodes each record of those categories once, hands it
over in log order, remembers the position reached, catches up from the store
and then follows it (`LogFollower`), and lets a caller wait until its own
append has been folded (`seen`), so a handler reads its own writes.

An event a projection cannot decode (a type from a newer writer, data that no
longer validates, a schema version without an upcaster) is *skipped*: counted,
logged with its position, stream and type, kept in `skipped` for
`potluck ops status`, and folding goes on. One unreadable event must never stop
a service from serving everything else; the log keeps the event, so a fixed
reader that replays it still sees it.

A skipped event still took a version of its stream. A projection that decides
with expected versions (the allocator's ledger, say) must count it, or every
later append to that stream would conflict forever: such a projection also
implements `VersionedProjection.passed_over(record)`, which the Fold calls
for each event it skipped.
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from potluck.events.errors import SchemaError
from potluck.events.follower import LogFollower
from potluck.events.schema import Event, RecordedEvent, registry
from potluck.events.store import EventStore

__all__ = ["Fold", "Projection", "SkippedEvent", "SkippedEvents", "VersionedProjection", "decode_or_skip"]

log = structlog.get_logger(__name__)

#: Called after each batch folded while following: the records of that batch.
BatchHook = Callable[[Sequence[RecordedEvent]], None]


class Projection(Protocol):
    """A pure fold of the events of `categories` (stream name prefixes before the first '-')."""

    @property
    def categories(self) -> frozenset[str]: ...

    def apply(self, event: Event, record: RecordedEvent) -> None: ...


@runtime_checkable
class VersionedProjection(Projection, Protocol):
    """A projection that tracks stream versions, told of each event of its categories it could not read."""

    def passed_over(self, record: RecordedEvent) -> None: ...


@dataclass(frozen=True)
class SkippedEvent:
    position: int
    stream: str
    type: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "stream": self.stream, "type": self.type, "error": self.error}


class SkippedEvents:
    """How many events a reader could not decode, and the last `keep` of them (None: all).
    `logged`: each is also logged as it is met (False for a tool that shows them all itself)."""

    def __init__(self, keep: int | None = 20, *, logged: bool = True) -> None:
        self.count = 0
        self.recent: deque[SkippedEvent] = deque(maxlen=keep)
        self.logged = logged

    def add(self, skipped: SkippedEvent) -> None:
        self.count += 1
        self.recent.append(skipped)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "recent": [s.as_dict() for s in self.recent]}


def decode_or_skip(record: RecordedEvent, skipped: SkippedEvents, *, reader: str) -> Event | None:
    """The event `record` holds, or None after counting and logging why it cannot be read."""
    try:
        return registry.decode_record(record)
    except SchemaError as exc:
        entry = SkippedEvent(record.position, record.stream, record.type, str(exc))
        skipped.add(entry)
        if not skipped.logged:
            return None
        log.error(
            "events.skipped_unreadable",
            reader=reader,
            position=record.position,
            stream=record.stream,
            type=record.type,
            error=str(exc),
            skipped_total=skipped.count,
            hint="a newer writer's event type, or data this version cannot read; upgrade this reader",
        )
        return None


class Fold:
    """Feeds a projection the log in order, from `position` on; see the module docstring."""

    def __init__(
        self,
        projection: Projection,
        *,
        reader: str,
        position: int = 0,
        keep_skipped: int | None = 20,
        log_skipped: bool = True,
    ) -> None:
        """`reader` names the service or tool in logs; `keep_skipped` bounds what `skipped` remembers;
        `log_skipped` False when the reader shows what it skipped itself."""
        self.projection = projection
        self.reader = reader
        self.position = position
        self.skipped = SkippedEvents(keep_skipped, logged=log_skipped)
        #: The record at `position` (None before the first one, or when started past it from a
        #: checkpoint): its event id says which log this fold follows (`last_event_id`).
        self.last_record: RecordedEvent | None = None
        #: Called with each batch folded while following the log (not while catching up).
        self.after_batch: list[BatchHook] = []
        self._advanced = asyncio.Condition()

    def apply(self, record: RecordedEvent) -> None:
        """Fold one record; records at or below `position` were folded already and are ignored."""
        if record.position <= self.position:
            return
        if record.category in self.projection.categories:
            event = decode_or_skip(record, self.skipped, reader=self.reader)
            if event is not None:
                self.projection.apply(event, record)
            elif isinstance(self.projection, VersionedProjection):
                self.projection.passed_over(record)
        self.position = record.position
        self.last_record = record

    @property
    def last_event_id(self) -> str | None:
        """The id of the event at `position`, when this fold read it: with the position, it names
        the log itself, so `replay --check` can tell a service that follows another database."""
        return None if self.last_record is None else str(self.last_record.event_id)

    def apply_all(self, records: Iterable[RecordedEvent]) -> None:
        for record in records:
            self.apply(record)

    async def catch_up(
        self, store: EventStore, *, until_position: int | None = None, batch_size: int = 5000
    ) -> None:
        """Fold what the log holds now (up to `until_position`, inclusive, when given)."""
        while True:
            if until_position is not None and self.position >= until_position:
                return
            batch = await store.read_all(self.position, batch_size, until_position=until_position)
            if not batch:
                return
            self.apply_all(batch)

    async def batches(self, store: EventStore) -> AsyncIterator[Sequence[RecordedEvent]]:
        """Follow the log forever, folding each batch before handing it out."""
        async for batch in LogFollower(store, after_position=self.position).batches():
            self.apply_all(batch)
            for hook in self.after_batch:
                hook(batch)
            async with self._advanced:
                self._advanced.notify_all()
            yield batch

    async def follow(self, store: EventStore) -> None:
        """Fold the log as it grows, until cancelled."""
        async for _ in self.batches(store):
            pass

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until `predicate` holds after some batch is folded (TimeoutError after `timeout`)."""
        async with self._advanced:
            async with asyncio.timeout(timeout):
                await self._advanced.wait_for(predicate)

    async def seen(self, position: int, timeout: float = 30.0) -> None:
        """Until the projection includes `position` (e.g. the caller's own append)."""
        await self.wait_until(lambda: self.position >= position, timeout)

    async def caught_up_with(self, store: EventStore, timeout: float = 30.0) -> None:
        """Until the projection includes everything committed before this call."""
        await self.seen(await store.head_position(), timeout)
