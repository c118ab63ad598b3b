"""The log bound's budget (services/hostd/log_cost.py): pure, no servers."""

import math

from potluck.hostd.log_cost import (
    GONE_SHARE_FLOOR_S,
    SHARE_WINDOW_S,
    TICK_S,
    LogBudget,
    carrying,
    decayed_shares,
)


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


def test_what_the_engine_spends_after_a_flood_ended_is_not_charged_to_a_quiet_container() -> None:
    """Tried: a flood's shim using 5 ms of CPU a tick and a quiet container's 5 us, for 20 ticks;
    then the flood's container ends (no reading of its shim) while the engine stays busy, for 4
    ticks (2 s). Before the fix the ended container's share was dropped at once: the quiet
    container, its shim's few microseconds the only share left, was charged all of dockerd's CPU
    and paused as a flood (seen in a full test run).
    Must hold: the quiet container's fraction of dockerd stays under 1 % for those ticks; the
    ended one's share is forgotten once it decayed below the floor; a running container's share
    is never dropped, however small."""
    decay = math.exp(-TICK_S / SHARE_WINDOW_S)
    shares: dict[str, float] = {}
    for _ in range(20):
        shares = decayed_shares(shares, {"flood": 0.005, "quiet": 0.000005}, decay)
    for _ in range(4):
        shares = decayed_shares(shares, {"quiet": 0.000005}, decay)
        assert shares["quiet"] / sum(shares.values()) < 0.01, shares
    for _ in range(400):
        shares = decayed_shares(shares, {"quiet": 0.0}, decay)
    assert set(shares) == {"quiet"}, shares
    assert shares["quiet"] < GONE_SHARE_FLOOR_S


def test_a_shim_busy_with_the_engines_requests_takes_no_share_while_its_log_stands_still() -> None:
    """Tried: a paused flood's shim using 0.2 ms a tick while dockerd still writes out its output
    (its log file growing), and a quiet container's shim 1 ms a tick, busy answering the
    engine's inspects (measured: 2 ms a second under a loop of them), its log file unchanged;
    then the quiet container writes a line; then a container whose log file is not seen.
    Before, the quiet shim's CPU counted as output carried: it took most of the shares, and
    most of what dockerd spent on the flood's output (0.23 of a core in a full run, paused as a
    flood itself).
    Must hold: while its log stands still the quiet container's share stays none (the flood's
    takes all of dockerd's); its CPU counts again the tick its log changed; a shim whose log
    is not known counts as before."""
    decay = math.exp(-TICK_S / SHARE_WINDOW_S)
    shares: dict[str, float] = {}
    for _ in range(20):
        spent = carrying({"flood": 0.0002, "quiet": 0.001}, {"flood": True, "quiet": False})
        shares = decayed_shares(shares, spent, decay)
        assert shares["quiet"] == 0.0
    assert carrying({"quiet": 0.001}, {"quiet": True}) == {"quiet": 0.001}
    assert carrying({"other": 0.001}, {}) == {"other": 0.001}
