"""Past folds for the History page, a member's machine page and `/?at=`: streamed, bounded, shared.

Each of these folds the event log from its start (history.py) with the
allocator's own model. Measured on a log of 12,000 events (allocations
requested and released): reading it all from Postgres took 0.07 s, most of it
waiting on the database; folding it took 0.36 to 0.45 s (30 to 37 µs an
event), all on the event loop and in one go. Every other request, /healthz
and the API included, waited for the whole fold, and eight at once waited
eight folds; the whole log was also held in memory by each. So here:

- the log is read `FOLD_BATCH` records at a time and each batch folded before
  the next is read, with a turn of the event loop between batches: another
  request waits at most one batch's fold (about 15 to 20 ms), and a fold holds
  one batch of records, not the log;
- at most `MAX_FOLDS` run at once in the process and `MAX_WAITING` more wait
  their turn; past that a request is told at once that the pages are busy
  (`Busy`, a 503 with Retry-After), and one owner (a user, a member's token)
  has at most `MAX_FOLDS_PER_OWNER` asked at once (past it, a 429);
- the same question asked again while the log's head has not moved gets the
  answer it had (a small cache keyed by the question and the head's position),
  and requests asking the same at the same time share one fold.

A position is final once the log holds it (positions follow commit order,
libs/events/store.py), so `?at=POSITION` at or below the head keeps its answer
whatever is appended afterwards. The day's samples are taken up to the
page's "now", which moves: an answer is reused for `SERIES_REUSE_S` at most
(its plot then ends up to that much earlier; nothing was recorded since, so
no value on it is stale), and after that folded anew.
"""

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from potluck.allocator.model import AllocatorModel
from potluck.allocator.web.history import Moment, Sample, Sampler, Until
from potluck.events import RecordedEvent
from potluck.readmodels.retention import DEFAULT_RETENTION_S

__all__ = ["Busy", "LogReader", "PastFolds"]

T = TypeVar("T")

#: Records read and folded between two turns of the event loop: about 15 to 20 ms of folding.
FOLD_BATCH = 500
#: Folds running at once: the loop is shared, so more would not end sooner, only later together.
MAX_FOLDS = 2
#: Folds waiting for a turn; past them a page is busy at once rather than after a long wait.
MAX_WAITING = 8
#: Past pages one owner has asked at once (running, waiting or sharing another's fold).
MAX_FOLDS_PER_OWNER = 2
#: Folded models kept for `?at=` (each as big as the allocator's own model of that time).
CACHED_MODELS = 2
#: The day's samples kept (96 of them each: small), for the History page and members' machines.
CACHED_SERIES = 16
#: How long a day's samples are shown again while the head has not moved.
SERIES_REUSE_S = 60.0
#: What a busy page says to wait before trying again.
BUSY_RETRY_S = 5


class LogReader(Protocol):
    """What a past fold reads of the event store (EventStore is one)."""

    async def head_position(self) -> int: ...

    async def read_all(
        self, after_position: int = 0, limit: int = 1000, *, until_position: int | None = None
    ) -> list[RecordedEvent]: ...


class Busy(Exception):
    """No fold for this request now: `status` 503 (the process's folds are taken) or 429 (the
    owner's own are)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class _Series:
    end: datetime
    samples: list[Sample]


class PastFolds:
    """Folds of the log's past for the pages, within the bounds above."""

    def __init__(
        self,
        store: LogReader,
        *,
        concurrent: int = MAX_FOLDS,
        waiting: int = MAX_WAITING,
        per_owner: int = MAX_FOLDS_PER_OWNER,
        batch: int = FOLD_BATCH,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        self.store = store
        self.batch = batch
        #: The allocator's retention window (retention.py): a past model holds what it held then.
        self.retention_s = retention_s
        self.max_waiting = waiting
        self.per_owner = per_owner
        self._turns = asyncio.Semaphore(concurrent)
        self._waiting = 0
        self._asked: Counter[str] = Counter()
        self._models: OrderedDict[Hashable, tuple[AllocatorModel, int]] = OrderedDict()
        self._series: OrderedDict[Hashable, _Series] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        #: Folds started since the process began (the tests count them).
        self.folds = 0

    async def at(self, moment: Moment, owner: str) -> tuple[AllocatorModel, int]:
        """The model and its position as the log had it at `moment`."""
        head = await self.store.head_position()
        if moment.position is not None:
            until = min(moment.position, head)
            key: Hashable = ("position", until)
        else:
            until = head
            key = ("time", moment.at, head)
        cached = self._models.get(key)
        if cached is not None:
            self._models.move_to_end(key)
            return cached

        async def fold() -> tuple[AllocatorModel, int]:
            folding = Until(moment, self.retention_s)
            await self._fold_log(until, folding.feed)
            return folding.model, folding.position

        answer = await self._shared(key, owner, fold)
        _keep(self._models, key, answer, CACHED_MODELS)
        return answer

    async def samples(self, end: datetime, only: frozenset[str] | None, owner: str) -> list[Sample]:
        """The pool's (or `only` these hosts') day up to `end`, as history.samples takes it."""
        head = await self.store.head_position()
        key = ("samples", only, head)
        cached = self._series.get(key)
        if cached is not None and 0 <= (end - cached.end).total_seconds() <= SERIES_REUSE_S:
            self._series.move_to_end(key)
            return cached.samples

        async def fold() -> _Series:
            sampler = Sampler(end, only=only)
            await self._fold_log(head, sampler.feed)
            return _Series(end, sampler.series())

        answer = await self._shared(key, owner, fold)
        _keep(self._series, key, answer, CACHED_SERIES)
        return answer.samples

    async def _fold_log(self, until: int, feed: Callable[[Iterable[RecordedEvent]], bool]) -> None:
        """Feed the log up to position `until` a batch at a time, until `feed` wants no more."""
        after = 0
        while after < until:
            batch = await self.store.read_all(after, self.batch, until_position=until)
            if not batch or not feed(batch):
                return
            after = batch[-1].position
            await asyncio.sleep(0)  # the read may not have yielded: let other requests run

    async def _shared(self, key: Hashable, owner: str, fold: Callable[[], Awaitable[T]]) -> T:
        """`fold()`'s answer: shared with a request already folding `key`, else folded in turn."""
        if self._asked[owner] >= self.per_owner:
            raise Busy(f"{self.per_owner} past pages of yours are still being worked out; wait for them", 429)
        self._asked[owner] += 1
        try:
            running = self._running.get(key)
            if running is not None:
                try:
                    answer: T = await asyncio.shield(running)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if running.cancelled() and (task is None or not task.cancelling()):
                        # The request folding it went away: this one is not cancelled.
                        raise Busy(
                            "the page was being worked out for another request; reload it", 503
                        ) from None
                    raise
                return answer
            if self._turns.locked() and self._waiting >= self.max_waiting:
                raise Busy("the pool's history is busy working out other pages; try again in a moment", 503)
            return await self._lead(key, fold)
        finally:
            self._asked[owner] -= 1
            if self._asked[owner] <= 0:
                del self._asked[owner]

    async def _lead(self, key: Hashable, fold: Callable[[], Awaitable[T]]) -> T:
        shared: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # Nobody else may be waiting: mark a failure seen, so that asyncio does not report it.
        shared.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._running[key] = shared
        try:
            self._waiting += 1
            try:
                await self._turns.acquire()
            finally:
                self._waiting -= 1
            try:
                self.folds += 1
                answer = await fold()
            finally:
                self._turns.release()
        except BaseException as exc:
            if isinstance(exc, Exception):
                shared.set_exception(exc)
            else:
                shared.cancel()
            raise
        finally:
            del self._running[key]
        shared.set_result(answer)
        return answer


def _keep(cache: "OrderedDict[Hashable, T]", key: Hashable, value: T, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
