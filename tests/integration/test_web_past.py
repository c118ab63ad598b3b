"""The pages that fold the log's past (History, a member's machine, `/?at=`; services/allocator/
web/past.py) over real HTTP against the allocator's own app on a real event store
(tests/fixtures/web_app.py).

What must hold: a past fold lets the event loop run other requests between its batches; only a
few run at once, the next few wait their turn and the rest are told the pages are busy, one
user's past pages are bounded on their own; requests asking the same share one fold, and an
answer is reused while the log's head has not moved; and the pages show what they showed when
the whole log was read and folded at once.
"""

import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from potluck.allocator.model import AllocatorModel
from potluck.allocator.web import history, routes
from potluck.allocator.web.past import MAX_FOLDS, MAX_FOLDS_PER_OWNER, MAX_WAITING, PastFolds
from potluck.contracts.allocation_events import (
    AllocationReleased,
    AllocationRequested,
    AllocationSpec,
    alloc_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.events import EventStore, Fold, RecordedEvent, StreamAppend
from potluck.readmodels.retention import DEFAULT_RETENTION_S
from tests.fixtures.web_app import serving
from tests.helpers import wait_until
from tests.unit.test_allocator_model import RecordingLog, cap, host, placed, spec


async def finished_allocations(store: EventStore, count: int, user: str = "alice") -> None:
    """`count` allocations requested and released (two events each), as a long-lived pool has."""
    wanted = AllocationSpec(
        resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=64 << 20), image="x:1"
    )
    for first in range(0, count, 500):
        await store.append_streams(
            [
                StreamAppend(
                    alloc_stream(f"old-{user}-{n:06}"),
                    [
                        AllocationRequested(
                            alloc_id=f"old-{user}-{n:06}", user=user, spec=wanted, lifetime_s=60
                        ),
                        AllocationReleased(alloc_id=f"old-{user}-{n:06}", by=f"user:{user}"),
                    ],
                    0,
                )
                for n in range(first, min(first + 500, count))
            ]
        )


class GatedStore:
    """The real store, whose log reads wait until `open` is set (a slow disk, say): the folds
    that read it stay under way until the test lets them go. Counts the reads under way."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.open = asyncio.Event()
        self.reading = 0
        self.most_reading = 0

    async def head_position(self) -> int:
        return await self.store.head_position()

    async def read_all(
        self, after_position: int = 0, limit: int = 1000, *, until_position: int | None = None
    ) -> list[RecordedEvent]:
        self.reading += 1
        self.most_reading = max(self.most_reading, self.reading)
        try:
            await self.open.wait()
            return await self.store.read_all(after_position, limit, until_position=until_position)
        finally:
            self.reading -= 1


def gated(store: EventStore) -> tuple[GatedStore, PastFolds, Callable[[web.Application], None]]:
    """A past-fold bound over the held-up store, and how to give it to the app."""
    reads = GatedStore(store)
    past = PastFolds(reads)

    def prepare(app: web.Application) -> None:
        app[routes.PAST] = past

    return reads, past, prepare


async def test_a_past_fold_lets_other_work_run_between_its_batches(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: on a log of 6,000 events, alice opens the History page and `/?at=` its head while a
    task that counts the event loop's turns runs beside them.
    Must hold: both pages answer 200, and the counter moved between the records each page folded
    (the loop ran other work during the fold, not only before and after it)."""
    await finished_allocations(store, 3000)
    ticks = 0
    seen: list[set[int]] = []
    fold_of = history._fold

    def watched(retention_s: float = DEFAULT_RETENTION_S) -> tuple[AllocatorModel, Fold]:
        model, fold = fold_of(retention_s)
        apply, ticks_seen = fold.apply, set[int]()
        seen.append(ticks_seen)

        def counted(record: RecordedEvent) -> None:
            ticks_seen.add(ticks)
            apply(record)

        fold.apply = counted  # type: ignore[method-assign]
        return model, fold

    monkeypatch.setattr(history, "_fold", watched)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with serving(store, ("alice",), lambda app: None) as pages:
        alice = await pages.signed_in("alice")
        head = await store.head_position()
        counting = asyncio.create_task(ticker())
        try:
            for path in ("/web/history", f"/?at={head}"):
                seen.clear()
                status, _ = await pages.get(alice, path)
                assert status == 200, path
                assert len(seen) == 1, path
                assert len(seen[0]) > 1, f"{path}: the whole fold ran in one turn of the event loop"
        finally:
            counting.cancel()


async def test_past_folds_at_once_are_bounded_and_the_rest_are_told_the_pages_are_busy(
    store: EventStore,
) -> None:
    """Tried: while the log's reads are held up, six users each ask for two different past
    moments (`?at=` positions, twelve folds), and a seventh opens the pool page; then the reads go.
    Must hold: never more folds read the log at once than MAX_FOLDS; MAX_WAITING more wait and
    answer 200 once the reads go; the rest are answered 503 at once with a busy page and a
    Retry-After; the seventh user's pool page answers 200 all along."""
    users = tuple(f"user{n}" for n in range(7))
    await finished_allocations(store, 20)
    reads, past, prepare = gated(store)
    async with serving(store, users, prepare) as pages:
        sessions = {who: await pages.signed_in(who) for who in users}
        asked = [(who, 1 + n + 2 * i) for i, who in enumerate(users[:6]) for n in range(2)]
        answers = [asyncio.create_task(pages.get(sessions[who], f"/?at={at}")) for who, at in asked]
        refused = len(asked) - MAX_FOLDS - MAX_WAITING
        await wait_until(
            lambda: sum(a.done() for a in answers) == refused and reads.reading == MAX_FOLDS,
            10,
            "the folds past the bound refused, the first ones reading",
        )
        for done in [a for a in answers if a.done()]:
            status, page = done.result()
            assert status == 503
            assert "busy" in page
        status, _ = await pages.get(sessions[users[6]], "/")
        assert status == 200, "the present pages must not wait for the past ones"

        reads.open.set()
        statuses = [status for status, _ in await asyncio.gather(*answers)]
        assert sorted(statuses) == [200] * (MAX_FOLDS + MAX_WAITING) + [503] * refused
        assert reads.most_reading == MAX_FOLDS
        assert past.folds == MAX_FOLDS + MAX_WAITING


async def test_one_user_has_a_bounded_number_of_past_pages_under_way(store: EventStore) -> None:
    """Tried: while the log's reads are held up, alice asks for one more past moment than she may
    at once, and bob asks for one; then the reads go.
    Must hold: alice's last is answered 429 saying hers are still being worked out; her others
    and bob's answer 200."""
    await finished_allocations(store, 20)
    reads, _, prepare = gated(store)
    async with serving(store, ("alice", "bob"), prepare) as pages:
        alice, bob = await pages.signed_in("alice"), await pages.signed_in("bob")
        hers = [asyncio.create_task(pages.get(alice, f"/?at={n + 1}")) for n in range(MAX_FOLDS_PER_OWNER)]
        await wait_until(lambda: reads.reading == MAX_FOLDS_PER_OWNER, 10, "alice's folds reading")
        status, page = await pages.get(alice, f"/?at={MAX_FOLDS_PER_OWNER + 1}")
        assert status == 429
        assert "of yours" in page
        his = asyncio.create_task(pages.get(bob, "/?at=5"))
        reads.open.set()
        assert [status for status, _ in await asyncio.gather(*hers, his)] == [200] * (MAX_FOLDS_PER_OWNER + 1)


def _plots(page: str) -> list[str]:
    return re.findall(r'<polyline[^>]*points="([^"]*)"', page)


async def test_the_same_past_page_asked_at_once_or_again_is_folded_once_until_the_log_moves(
    store: EventStore,
) -> None:
    """Tried: while the log's reads are held up, four users open the History page twice each; then
    the reads go; then one opens it again; then an event is appended and it is opened again.
    Also `?at=` one position, twice.
    Must hold: the eight first answers are 200 with the same plots, from one fold; the ninth
    comes from that fold too; after the append the page is folded anew; the position once."""
    users = ("u1", "u2", "u3", "u4")
    await finished_allocations(store, 20)
    reads, past, prepare = gated(store)
    async with serving(store, users, prepare) as pages:
        sessions = [await pages.signed_in(who) for who in users]
        answers = [asyncio.create_task(pages.get(s, "/web/history")) for s in sessions for _ in range(2)]
        await wait_until(lambda: sum(past._asked.values()) == 8, 10, "the eight requests under way")
        reads.open.set()
        pages_seen = await asyncio.gather(*answers)
        assert [status for status, _ in pages_seen] == [200] * 8
        assert len({tuple(_plots(page)) for _, page in pages_seen}) == 1
        assert past.folds == 1

        status, page = await pages.get(sessions[0], "/web/history")
        assert (status, _plots(page)) == (200, _plots(pages_seen[0][1]))
        assert past.folds == 1, "the log's head did not move: the answer it had is reused"

        await finished_allocations(store, 1, user="u1")  # the log's head moves
        assert (await pages.get(sessions[0], "/web/history"))[0] == 200
        assert past.folds == 2

        for _ in range(2):
            assert (await pages.get(sessions[1], "/?at=3"))[0] == 200
        assert past.folds == 3


class Collected(RecordingLog):
    """A log in memory that also keeps what was appended, to write it to the real store."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[StreamAppend] = []

    def append(self, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        self.appends.extend(appends)
        return super().append(appends)


def _cards(page: str) -> list[str]:
    return re.findall(r'<article class="host".*?</article>', page, re.S)


async def test_the_past_pages_show_what_the_live_page_showed_and_a_whole_fold_shows(
    store: EventStore,
) -> None:
    """Tried: two hosts and an allocation placed on one are written to the log; alice opens the
    pool page; then a second allocation is placed; with the allocator's clock fixed, she opens
    `/?at=` the position she saw first, `/?at=` the head, the pool page and the History page.
    Must hold: `/?at=` the first position shows the host cards she saw then, `/?at=` the head those
    of the pool page now (and they differ); the History page's plots are those of
    history.samples over the whole log read at once."""
    log = Collected()
    host(log, "h1", cap(4, 8))
    host(log, "h2", cap(2, 2))
    placed(log, "a1", "alice", "h1", spec(1, 2))
    first = len(log.appends)
    placed(log, "a2", "alice", "h2", spec(1, 1))
    now = datetime.now(UTC)

    async def write(appends: list[StreamAppend]) -> int:
        for append in appends:
            await store.append_streams([StreamAppend(append.stream, append.events)])
        head = await store.head_position()
        await wait_until(lambda: pages.engine.position >= head, 10, "the log folded")
        return head

    async with serving(store, ("alice",), lambda app: None, clock=lambda: now) as pages:
        alice = await pages.signed_in("alice")
        then = await write(log.appends[:first])
        _, page_then = await pages.get(alice, "/")
        head = await write(log.appends[first:])
        _, page_now = await pages.get(alice, "/")
        assert len(_cards(page_then)) == 2
        assert _cards(page_then) != _cards(page_now)

        _, at_then = await pages.get(alice, f"/?at={then}")
        _, at_head = await pages.get(alice, f"/?at={head}")
        assert _cards(at_then) == _cards(page_then)
        assert _cards(at_head) == _cards(page_now)

        now = (await store.read_all(0, 10_000))[-1].recorded_at + timedelta(minutes=1)
        series = history.samples(await store.read_all(0, 10_000), now)
        plots = [history.plot(series, "cpus"), history.plot(series, "memory")]
        _, page = await pages.get(alice, "/web/history")
        assert _plots(page) == [line for plot in plots for line in (plot.donated, plot.reserved)]
        assert len(set(_plots(page))) > 1, "the plots show the hosts and the allocations"
