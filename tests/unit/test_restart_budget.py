"""hostd's budget for starting an interactive allocation's container again: a few times in a
sliding window, per allocation; past it the container's end is reported."""

from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.restart_budget import RestartBudget


def test_the_budget_allows_so_many_starts_in_the_window_then_refuses() -> None:
    budget = RestartBudget(times=3, window_s=60)
    assert [budget.allow("a", t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert budget.allow("b", 3)  # another allocation's budget is its own


def test_starts_older_than_the_window_no_longer_count() -> None:
    budget = RestartBudget(times=2, window_s=60)
    assert budget.allow("a", 0)
    assert budget.allow("a", 30)
    assert not budget.allow("a", 59)
    assert budget.allow("a", 60)  # the start at 0 left the window
    assert not budget.allow("a", 61)


def test_a_refused_start_is_not_counted_and_forget_starts_afresh() -> None:
    budget = RestartBudget(times=1, window_s=60)
    assert budget.allow("a", 0)
    assert not budget.allow("a", 10)
    assert budget.allow("a", 60)  # the refusal at 10 did not extend the window
    budget.forget("a")
    assert budget.allow("a", 61)


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=40), st.integers(1, 6))
def test_no_window_ever_holds_more_allowed_starts_than_the_budget(times: list[float], limit: int) -> None:
    budget = RestartBudget(times=limit, window_s=100)
    allowed = [t for t in sorted(times) if budget.allow("a", t)]
    for start in allowed:
        assert sum(1 for t in allowed if start <= t < start + 100) <= limit
