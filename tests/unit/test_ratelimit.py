"""The gateway's failed-login limiter: exponential delay, lockout, forgetting, bounded memory."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.sshgateway.ratelimit import FailureLimiter, LimitPolicy, Verdict

POLICY = LimitPolicy(base_delay_s=0.5, max_delay_s=4.0, window_s=60.0, lockout_after=6, lockout_s=30.0)


def test_a_key_without_failures_waits_for_nothing() -> None:
    limiter = FailureLimiter(POLICY)
    assert limiter.check("10.0.0.1", now=0.0) == Verdict()
    assert not limiter.check("10.0.0.1", now=0.0).locked


def test_each_failure_doubles_the_delay_up_to_the_cap() -> None:
    limiter = FailureLimiter(POLICY)
    delays = [limiter.failed("a", now=float(i)).delay_s for i in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert limiter.check("a", now=5.0) == Verdict(delay_s=4.0, failures=5)


def test_enough_failures_lock_the_key_out_for_a_while() -> None:
    limiter = FailureLimiter(POLICY)
    for i in range(5):
        assert not limiter.failed("a", now=float(i)).locked
    verdict = limiter.failed("a", now=5.0)
    assert verdict.locked
    assert verdict.locked_for_s == pytest.approx(30.0)
    assert limiter.check("a", now=20.0).locked_for_s == pytest.approx(15.0)
    # Once the lockout is over the key starts afresh.
    assert limiter.check("a", now=35.0) == Verdict()


def test_failures_older_than_the_window_are_forgotten() -> None:
    limiter = FailureLimiter(POLICY)
    limiter.failed("a", now=0.0)
    limiter.failed("a", now=30.0)
    assert limiter.check("a", now=59.0).failures == 2
    assert limiter.check("a", now=61.0) == Verdict(delay_s=0.5, failures=1)
    assert limiter.check("a", now=95.0) == Verdict()
    assert len(limiter) == 0


def test_keys_are_counted_apart() -> None:
    limiter = FailureLimiter(POLICY)
    limiter.failed("10.0.0.1", now=0.0)
    limiter.failed("10.0.0.1", now=0.0)
    assert limiter.check("10.0.0.2", now=0.0) == Verdict()
    assert limiter.check("10.0.0.1", now=0.0).delay_s == 1.0


def test_a_success_clears_failures_but_not_a_lockout() -> None:
    limiter = FailureLimiter(POLICY)
    limiter.failed("a", now=0.0)
    limiter.succeeded("a")
    assert limiter.check("a", now=0.0) == Verdict()
    for i in range(6):
        limiter.failed("b", now=float(i))
    limiter.succeeded("b")
    assert limiter.check("b", now=6.0).locked


def test_memory_is_bounded_forgetting_the_least_recently_failed() -> None:
    limiter = FailureLimiter(POLICY, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.failed(key, now=0.0)
    limiter.failed("a", now=1.0)  # a is now the most recent
    limiter.failed("d", now=2.0)
    assert len(limiter) == 3
    assert limiter.check("b", now=2.0) == Verdict()
    assert limiter.check("a", now=2.0).failures == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_delay_s": -1.0},
        {"base_delay_s": 2.0, "max_delay_s": 1.0},
        {"window_s": 0.0},
        {"lockout_after": 0},
        {"lockout_s": -1.0},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        LimitPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1, max_size=40),
    later=st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
)
def test_verdicts_stay_within_the_policy(gaps: list[float], later: float) -> None:
    limiter = FailureLimiter(POLICY)
    now = 0.0
    for gap in gaps:
        now += gap
        verdict = limiter.failed("k", now=now)
        assert 0.0 <= verdict.delay_s <= POLICY.max_delay_s
        assert 0.0 <= verdict.locked_for_s <= POLICY.lockout_s
        assert verdict.failures < POLICY.lockout_after
    final = limiter.check("k", now=now + later)
    assert 0.0 <= final.delay_s <= POLICY.max_delay_s
    assert final.locked_for_s <= POLICY.lockout_s


def test_failures_during_a_lockout_lock_the_key_again_from_then() -> None:
    """Connections admitted before a lockout may fail during it (failures are counted when they end):
    enough of them renew the lockout from the last one, and the count starts again."""
    limiter = FailureLimiter(POLICY)
    for _ in range(POLICY.lockout_after):
        limiter.failed("k", now=0.0)
    for _ in range(POLICY.lockout_after - 1):
        verdict = limiter.failed("k", now=10.0)
    assert verdict.locked_for_s == POLICY.lockout_s - 10.0
    verdict = limiter.failed("k", now=10.0)
    assert verdict.locked_for_s == POLICY.lockout_s
    assert verdict.failures == 0


def test_a_failure_forgiven_no_longer_counts() -> None:
    limiter = FailureLimiter(
        LimitPolicy(base_delay_s=1, max_delay_s=8, window_s=100, lockout_after=3, lockout_s=50)
    )
    limiter.failed("src", 1.0)
    limiter.failed("src", 2.0)
    limiter.forgive("src", 2.0)
    assert limiter.check("src", 3.0).failures == 1
    limiter.forgive("src", 99.0)  # none recorded then: nothing changes
    limiter.forgive("other", 1.0)
    assert limiter.check("src", 3.0).failures == 1
