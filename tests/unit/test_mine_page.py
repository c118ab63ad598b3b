"""The page "mine", bounded (services/allocator/web/mine_page.py), folded from a log in memory.

What must hold: whatever a user's history, the page shows what still runs or waits and only the
newest finished allocations (and jobs), counts every one, says how many it leaves out, and shows
a user nothing of another's; an operator's view is bounded the same way over the whole pool.
"""

from datetime import UTC, datetime, timedelta

import jinja2
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.web.mine_page import FINISHED_SHOWN, mine_of, newest, newest_of
from potluck.allocator.web.routes import HERE
from potluck.contracts.allocation_events import AllocationReleased, AllocationRequested, alloc_stream
from potluck.readmodels.owner_index import EARLIEST
from tests.unit.test_allocator_model import RecordingLog, cap, folded, host, placed, spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=40), st.integers(1, 5), st.integers(1, 5)
)
def test_newest_keeps_the_newest_of_each_kind_and_counts_the_rest(
    items: list[tuple[bool, int]], most_finished: int, most_unfinished: int
) -> None:
    """Tried: random finished and unfinished items at random times, random bounds. Must hold: at
    most the bound of each kind is shown, shown and left out add up to all, and no item left out
    is newer than one shown of its kind."""
    rows = [(done, T0 + timedelta(minutes=m), f"i{n}") for n, (done, m) in enumerate(items)]
    got = newest(
        rows,
        finished=lambda r: r[0],
        key=lambda r: (r[1], r[2]),
        most_finished=most_finished,
        most_unfinished=most_unfinished,
    )
    for kind, most, left in (
        (True, most_finished, got.finished_left),
        (False, most_unfinished, got.unfinished_left),
    ):
        every = [r for r in rows if r[0] is kind]
        shown = [r for r in got.shown if r[0] is kind]
        assert len(shown) == min(most, len(every))
        assert len(shown) + left == len(every)
        out = [r for r in every if r not in shown]
        assert all((o[1], o[2]) < (s[1], s[2]) for o in out for s in shown)


def long_history() -> RecordingLog:
    """alice: 60 released allocations, then 2 that run; bob: 1 that runs."""
    log = RecordingLog()
    host(log, "h1", cap(8, 16))
    for n in range(60):
        requested = AllocationRequested(alloc_id=f"old{n:02}", user="alice", spec=spec(1), lifetime_s=60)
        log.add(
            alloc_stream(f"old{n:02}"), requested, AllocationReleased(alloc_id=f"old{n:02}", by="user:alice")
        )
    placed(log, "now1", "alice", "h1", spec(1))
    placed(log, "now2", "alice", "h1", spec(1))
    placed(log, "bobs", "bob", "h1", spec(1))
    return log


def test_a_long_history_shows_what_runs_and_the_newest_finished_and_says_how_many_are_left_out() -> None:
    """Tried: alice's page after 60 finished allocations and 2 running, bob having one; the
    operator's page of the same pool; the fragment rendered. Must hold: alice sees her 2 running
    and the 50 newest finished, 62 counted, 10 left out, never bob's; the operator sees all 3
    running and 50 finished; the page says 10 are not shown and that `potluck alloc ls` lists them."""
    model, _ = folded(long_history())

    mine = mine_of(model, "alice")
    shown = [r.alloc_id for r in mine.rows]
    assert len(shown) == 2 + FINISHED_SHOWN
    assert {"now1", "now2"} <= set(shown)
    assert "bobs" not in shown
    assert set(shown) - {"now1", "now2"} == {f"old{n:02}" for n in range(10, 60)}
    assert (mine.allocations_total, mine.allocations_finished_left, mine.allocations_unfinished_left) == (
        62,
        10,
        0,
    )

    pool = mine_of(model, None)
    assert {"now1", "now2", "bobs"} <= {r.alloc_id for r in pool.rows}
    assert len(pool.rows) == 3 + FINISHED_SHOWN
    assert pool.allocations_total == 63

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    html = env.get_template("_mine.html").render(mine=mine, operator=False)
    assert "Allocations (62)" in html
    assert html.count("data-alloc=") == 52
    assert 'data-not-shown="10"' in html
    assert "10 older finished" in html
    assert "<code>potluck alloc ls</code> lists them all" in html


@given(
    st.lists(
        # Mostly ended, so that a user often has more finished ones than the page shows.
        st.tuples(st.sampled_from(["alice", "bob"]), st.sampled_from(["ended"] * 3 + ["waits", "runs"])),
        max_size=150,
    )
)
def test_the_newest_found_from_the_indexes_is_what_a_look_at_every_allocation_finds(
    history: list[tuple[str, str]],
) -> None:
    """Tried: any history of two users' allocations ended, waiting and running (more finished
    ones than the page shows). Must hold: what the page shows of a user, found from the held
    index and the user's allocations newest first, is exactly what `newest` finds looking at
    every allocation of the user, and so are the counts; and the same for an operator's page,
    found from the pending and active indexes and every user's allocations merged."""
    log = RecordingLog()
    host(log, "h1", cap(1000, 1000))
    for n, (user, fate) in enumerate(history):
        alloc_id = f"a{n:03}"
        if fate == "runs":
            placed(log, alloc_id, user, "h1", spec(1))
            continue
        requested = AllocationRequested(alloc_id=alloc_id, user=user, spec=spec(1), lifetime_s=60)
        ended = [AllocationReleased(alloc_id=alloc_id, by=f"user:{user}")] if fate == "ended" else []
        log.add(alloc_stream(alloc_id), requested, *ended)
    model, _ = folded(log)
    seen_by: tuple[str | None, ...] = ("alice", "bob", None)  # None: an operator
    for seer in seen_by:
        theirs = model.allocations_of(seer) if seer else list(model.allocations.allocations.values())
        every = newest(
            theirs, finished=lambda a: a.terminal, key=lambda a: (a.requested_at or EARLIEST, a.alloc_id)
        )
        found = newest_of(model, seer)
        assert [a.alloc_id for a in found.shown] == [a.alloc_id for a in every.shown]
        assert (found.unfinished_left, found.finished_left) == (every.unfinished_left, every.finished_left)
        assert mine_of(model, seer).allocations_total == len(theirs)
