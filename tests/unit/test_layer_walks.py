"""When the disk guard counts a container's layer entries again (services/hostd/layer_walks.py),
without an engine."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.layer_walks import WALK_MOST_S, WALK_SHARE, LayerWalks, next_walk_in

costs = st.floats(min_value=0, max_value=3600, allow_nan=False)
intervals = st.floats(min_value=0.05, max_value=3600, allow_nan=False)


@given(cost=costs, regular=intervals)
def test_a_count_stands_at_least_the_regular_interval_and_at_most_the_longer_of_it_and_the_cap(
    cost: float, regular: float
) -> None:
    wait = next_walk_in(cost, regular)
    assert regular <= wait <= max(regular, WALK_MOST_S)


@given(cost=costs, regular=intervals)
def test_counts_take_at_most_their_share_of_the_time_unless_the_cap_says_otherwise(
    cost: float, regular: float
) -> None:
    wait = next_walk_in(cost, regular)
    assert cost <= WALK_SHARE * wait * (1 + 1e-9) or wait >= WALK_MOST_S


@given(cost=costs, regular=intervals, containers=st.integers(min_value=1, max_value=1000))
def test_the_counts_of_a_machines_containers_together_take_at_most_the_share(
    cost: float, regular: float, containers: int
) -> None:
    """Each container counted once in its wait, at `cost` each: all of them together take at
    most WALK_SHARE of it, unless the cap says otherwise."""
    wait = next_walk_in(cost, regular, containers)
    assert cost * containers <= WALK_SHARE * wait * (1 + 1e-9) or wait >= WALK_MOST_S
    assert next_walk_in(cost, regular, containers) >= next_walk_in(cost, regular)


@given(a=costs, b=costs, regular=intervals)
def test_a_costlier_count_never_stands_for_less_time(a: float, b: float, regular: float) -> None:
    low, high = sorted((a, b))
    assert next_walk_in(low, regular) <= next_walk_in(high, regular)


def test_the_default_images_count_stands_fourteen_seconds_and_busyboxs_the_regular_interval() -> None:
    """The costs measured on this machine (the module's docstring), at the guard's 10 s and at
    the tests' 0.5 s."""
    assert next_walk_in(0.7, 10.0) == pytest.approx(14.0)
    assert next_walk_in(0.7, 0.5) == pytest.approx(14.0)
    assert next_walk_in(0.03, 10.0) == 10.0
    assert next_walk_in(0.03, 0.5) == pytest.approx(0.6)
    assert next_walk_in(30.0, 10.0) == WALK_MOST_S
    assert next_walk_in(0.7, 10.0, containers=3) == pytest.approx(42.0)


def test_a_count_stands_until_it_is_due_and_only_for_its_own_container() -> None:
    walks = LayerWalks()
    assert walks.standing("c1", 0.0) is None
    walks.counted("c1", 6000, started=100.0, ended=100.7, regular_s=0.5)
    assert walks.standing("c1", 100.7) == 6000
    assert walks.standing("c1", 113.9) == 6000
    assert walks.standing("c1", 114.1) is None
    assert walks.standing("c2", 100.7) is None


def test_a_new_count_replaces_the_last_and_gone_containers_are_forgotten() -> None:
    walks = LayerWalks()
    walks.counted("c1", 6000, started=100.0, ended=100.7, regular_s=0.5)
    walks.counted("c1", 2, started=101.0, ended=101.03, regular_s=0.5)
    assert walks.standing("c1", 101.5) == 2
    assert walks.standing("c1", 101.7) is None
    walks.counted("c2", 5, started=101.0, ended=101.7, regular_s=0.5)
    walks.keep_only(["c2"])
    assert walks.standing("c1", 101.5) is None
    assert walks.standing("c2", 101.8) == 5
