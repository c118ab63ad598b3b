"""Rates per key (potluck.kernel.key_rates), as the registry keeps them per host: a token
bucket per key, refusals counted and logged sparingly."""

from hypothesis import given
from hypothesis import strategies as st

from potluck.kernel.key_rates import KeyRates, RatePolicy

POLICY = RatePolicy(per_s=2.0, burst=5)


def test_a_burst_then_the_steady_rate() -> None:
    rates = KeyRates(POLICY)
    assert [rates.check("a", 0.0).allowed for _ in range(7)] == [True] * 5 + [False] * 2
    assert rates.check("a", 0.5).allowed
    assert not rates.check("a", 0.5).allowed
    assert rates.refused["a"] == 3


def test_one_host_over_its_rate_leaves_the_others_alone() -> None:
    rates = KeyRates(POLICY)
    for _ in range(100):
        rates.check("loop", 0.0)
    assert all(rates.check("calm", 0.0).allowed for _ in range(5))
    assert "calm" not in rates.refused


def test_the_first_refusal_of_a_streak_is_logged_then_every_nth() -> None:
    rates = KeyRates(POLICY, log_every=10)
    logged = [rates.check("a", 0.0).log for _ in range(30)]
    assert [i for i, log in enumerate(logged) if log] == [5, 14, 24]
    # Refilled: allowed again, which ends the streak; the next refusal is logged again.
    verdicts = [rates.check("a", 10.0) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert verdicts[-1].log


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=300))
def test_no_host_gets_more_than_burst_plus_rate_times_elapsed(calls: list[tuple[str, float]]) -> None:
    rates = KeyRates(POLICY)
    now = 0.0
    allowed: dict[str, int] = {}
    for host, step in calls:
        now += step
        if rates.check(host, now).allowed:
            allowed[host] = allowed.get(host, 0) + 1
    for n in allowed.values():
        assert n <= POLICY.burst + POLICY.per_s * now + 1e-9


@given(st.integers(1, 50))
def test_memory_is_bounded_by_max_keys(n_hosts: int) -> None:
    rates = KeyRates(POLICY, max_keys=10)
    for i in range(n_hosts):
        for _ in range(10):
            rates.check(f"h{i}", 0.0)
    assert len(rates._buckets) <= 10


def test_a_policy_must_let_something_through() -> None:
    import pytest

    with pytest.raises(ValueError, match="per_s"):
        RatePolicy(per_s=0, burst=5)
    with pytest.raises(ValueError, match="burst"):
        RatePolicy(per_s=1, burst=0.5)
