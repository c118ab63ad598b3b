"""The log bound's budget (services/hostd/log_cost.py): pure, no servers."""

from potluck.hostd.log_cost import LogBudget


def test_a_container_within_its_cap_is_never_held_and_cannot_save_up_for_a_burst() -> None:
    """Tried: half a core's cap, ticks of 0.5 s; a container (with its output's cost) using
    less than its cap for a long while, then a burst of twice its cap for one tick. Must hold:
    never held while within the cap; the burst holds it at once (savings are one tick's worth)."""
    budget = LogBudget(cap=0.5, tick_s=0.5)
    for _ in range(100):
        assert not budget.charge(0.2, 0.5)
    assert budget.left == 0.25
    assert budget.charge(0.5 + 0.25 + 0.01, 0.5)


def test_a_flood_is_held_until_what_it_cost_is_paid_back_at_its_cap() -> None:
    """Tried: one tick costing a whole core (0.5 s of CPU in 0.5 s) at half a core's cap, then
    ticks costing nothing (paused). Must hold: held until the debt (0.25 s) is earned back at
    0.5 s of CPU a second: paid back by the end of the next tick, and running again then."""
    budget = LogBudget(cap=0.5, tick_s=0.5)
    assert budget.charge(0.5, 0.5)
    assert budget.left == -0.25
    assert not budget.charge(0.0, 0.5)
    assert budget.left == 0.0
