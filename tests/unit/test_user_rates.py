"""Each user's rate of changes (potluck.allocator.user_rates) and the wait a refusal names
(potluck.kernel.key_rates): pure, the clock passed in."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.user_rates import DEFAULT_CHANGE_RATE, TooManyChanges, UserRates
from potluck.kernel.key_rates import KeyRates, RatePolicy

POLICY = RatePolicy(per_s=2.0, burst=3)


def _rates() -> tuple[UserRates, list[float]]:
    now = [0.0]
    return UserRates(POLICY, clock=lambda: now[0]), now


def test_a_burst_is_admitted_then_refused_with_the_wait_until_the_next_token() -> None:
    """Tried: alice makes the burst's 3 changes at once, then a fourth. Must hold: the three
    pass; the fourth raises TooManyChanges, 429 RATE_LIMITED, naming a wait of 1 s (half a
    second to the next token at 2 a second, rounded up to whole seconds) in its message and
    its retry_after_s."""
    rates, _ = _rates()
    for _ in range(3):
        rates.admit("alice")
    with pytest.raises(TooManyChanges) as refused:
        rates.admit("alice")
    assert (refused.value.status, refused.value.code, refused.value.retry_after_s) == (429, "RATE_LIMITED", 1)
    assert "try again in 1 s" in refused.value.message


def test_a_refused_user_leaves_the_others_alone_and_is_admitted_after_the_wait() -> None:
    """Tried: alice goes past her rate many times over; bob then makes his burst; the clock
    moves on by the wait alice was told. Must hold: bob's changes all pass, and alice's next
    one passes once the wait has passed."""
    rates, now = _rates()
    waits = []
    for _ in range(20):
        try:
            rates.admit("alice")
        except TooManyChanges as exc:
            waits.append(exc.retry_after_s)
    assert len(waits) == 17
    for _ in range(3):
        rates.admit("bob")
    now[0] += waits[-1]
    rates.admit("alice")
    assert "bob" not in rates.rates.refused


def test_the_default_lets_a_script_burst_tens_and_go_on_at_a_few_a_second() -> None:
    """Tried: the default rate, a user making 50 changes at once, one more, and then one every
    0.21 s (just under 5 a second) for a minute. Must hold: the 51st at once is refused, and
    none after it (a batch script's pace)."""
    now = [0.0]
    rates = UserRates(clock=lambda: now[0])
    for _ in range(int(DEFAULT_CHANGE_RATE.burst)):
        rates.admit("batch")
    with pytest.raises(TooManyChanges):
        rates.admit("batch")
    for _ in range(300):
        now[0] += 1.05 / DEFAULT_CHANGE_RATE.per_s
        rates.admit("batch")


@given(
    per_s=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    extra=st.integers(min_value=1, max_value=50),
)
def test_a_refusal_names_the_wait_after_which_the_next_message_passes(
    per_s: float, burst: int, extra: int
) -> None:
    """Tried: any rate; a key spends its burst and `extra` more at one instant, then tries again
    after the last refusal's retry_after_s (and, separately, a little before it). Must hold:
    after it, the next message passes; before it (by a tenth of the wait), it does not."""
    policy = RatePolicy(per_s=per_s, burst=burst)
    rates, early = KeyRates(policy), KeyRates(policy)
    for keyed in (rates, early):
        verdicts = [keyed.check("k", 0.0) for _ in range(burst + extra)]
    assert all(v.allowed for v in verdicts[:burst])
    assert not any(v.allowed for v in verdicts[burst:])
    wait = verdicts[-1].retry_after_s
    assert wait == pytest.approx(1 / per_s)
    assert rates.check("k", wait * (1 + 1e-9)).allowed
    assert not early.check("k", wait * 0.9).allowed
