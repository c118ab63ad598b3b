"""The owner policy's decision (services/hostd/owner_policy.py): pure, readings and clocks in.

Each test feeds `decide` readings at monotonic times and a local wall clock, and checks the
state, cause, reason and share it returns; the property tests check that an owner who keeps
coming back within `resume_after_idle_s` throttles the pool once and gives it back once, and
that the pool never keeps more than was donated.
"""

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.hostd.owner_policy import Decision, Memory, Readings, applies, decide
from potluck.hostd.policy_config import OwnerPolicy, PolicyWindow

MONDAY_NOON = datetime(2026, 11, 30, 12, 0)  # a Monday
SUNDAY_NOON = datetime(2026, 11, 29, 12, 0)
DONATED = 2.0


def run(
    policy: OwnerPolicy, timeline: list[tuple[float, Readings]], now: datetime = MONDAY_NOON
) -> list[Decision]:
    memory = Memory()
    decisions = []
    for at, readings in timeline:
        decision, memory = decide(policy, DONATED, memory, readings, now, at)
        decisions.append(decision)
    return decisions


def transitions(decisions: list[Decision]) -> list[str]:
    """The states entered, in order (the start counts as normal)."""
    out: list[str] = []
    previous = Decision()
    for decision in decisions:
        if not decision.same_action(previous):
            out.append(decision.state)
        previous = decision
    return out


def test_a_busy_owner_throttles_the_pool_to_its_share_with_a_reason() -> None:
    """The owner at 1.3 CPUs (above 0.5): throttled, cause owner, the reason says 1.3 CPUs,
    and the pool keeps throttle_to of the donated CPUs."""
    [decision] = run(OwnerPolicy(), [(0.0, Readings(owner_cpus=1.3))])

    assert decision.state == "throttled"
    assert decision.cause == "owner"
    assert "1.3 CPUs" in decision.reason
    assert decision.share_cpus == 0.25 * DONATED


def test_the_share_comes_back_only_after_the_owner_was_idle_long_enough() -> None:
    """Busy at t=0, idle from t=1: still throttled at t=30.5 (idle 30.5 s counted from
    the last busy sample at 0 is past 30, so normal there), throttled at t=29."""
    policy = OwnerPolicy(resume_after_idle_s=30)
    decisions = run(
        policy,
        [(0.0, Readings(owner_cpus=1.0)), (1.0, Readings(owner_cpus=0.1)), (29.0, Readings(owner_cpus=0.1)),
         (30.5, Readings(owner_cpus=0.1))],
    )  # fmt: skip

    assert [d.state for d in decisions] == ["throttled", "throttled", "throttled", "normal"]
    assert "comes back after 30 s idle" in decisions[2].reason


def test_freeze_beats_throttle_and_the_battery_names_it() -> None:
    """The owner is busy (throttle) and the machine runs on battery (freeze): frozen, by the
    battery, share 0."""
    [decision] = run(OwnerPolicy(), [(0.0, Readings(owner_cpus=2.0, on_battery=True))])

    assert (decision.state, decision.cause, decision.share_cpus) == ("frozen", "battery", 0.0)


def test_opting_out_leaves_the_pool_alone() -> None:
    """ignore / run / no window / a limit never reached: a busy owner on battery changes nothing."""
    policy = OwnerPolicy(on_owner_busy="ignore", on_battery="run", max_temperature_c=150)

    decisions = run(policy, [(0.0, Readings(owner_cpus=2.0, on_battery=True, temperature_c=90.0))])

    assert decisions == [Decision()]


def test_heat_throttles_until_five_degrees_below_the_max() -> None:
    """86 °C over a max of 85 throttles; 82 °C keeps it throttled; 79.9 °C gives the share back."""
    decisions = run(
        OwnerPolicy(max_temperature_c=85),
        [(0.0, Readings(temperature_c=84.0)), (1.0, Readings(temperature_c=86.0)),
         (2.0, Readings(temperature_c=82.0)), (3.0, Readings(temperature_c=79.9))],
    )  # fmt: skip

    assert [(d.state, d.cause) for d in decisions] == [
        ("normal", None), ("throttled", "heat"), ("throttled", "heat"), ("normal", None),
    ]  # fmt: skip
    assert "86 °C" in decisions[1].reason


def test_a_hot_machine_whose_sensor_fails_a_read_stays_throttled_until_it_reads_cool() -> None:
    """86 °C throttles; a failed read (None) and 82 °C keep it throttled, with no change of
    action in between; 79.9 °C gives the share back."""
    decisions = run(
        OwnerPolicy(max_temperature_c=85),
        [(0.0, Readings(temperature_c=86.0)), (1.0, Readings(temperature_c=None)),
         (2.0, Readings(temperature_c=82.0)), (3.0, Readings(temperature_c=None)),
         (4.0, Readings(temperature_c=79.9)), (5.0, Readings(temperature_c=None))],
    )  # fmt: skip

    assert [(d.state, d.cause) for d in decisions] == [
        ("throttled", "heat"), ("throttled", "heat"), ("throttled", "heat"),
        ("throttled", "heat"), ("normal", None), ("normal", None),
    ]  # fmt: skip
    assert transitions(decisions) == ["throttled", "normal"]
    assert "cannot be read" in decisions[1].reason


def test_a_machine_without_sensors_is_never_hot() -> None:
    """No thermal zone (None): normal."""
    assert run(OwnerPolicy(), [(0.0, Readings(temperature_c=None))]) == [Decision()]


def test_windows_go_by_the_local_clock_and_the_days() -> None:
    """A weekday window 09:00-18:00 freezes at Monday noon, not on Sunday, not at 18:00."""
    window = PolicyWindow.model_validate(
        {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00", "action": "freeze"}
    )
    policy = OwnerPolicy(windows=[window])

    [monday] = run(policy, [(0.0, Readings())], now=MONDAY_NOON)
    [sunday] = run(policy, [(0.0, Readings())], now=SUNDAY_NOON)
    [evening] = run(policy, [(0.0, Readings())], now=MONDAY_NOON.replace(hour=18))

    assert (monday.state, monday.cause) == ("frozen", "window")
    assert "mon,tue,wed,thu,fri 09:00-18:00" in monday.reason
    assert sunday.state == evening.state == "normal"


def test_busy_and_idle_every_5_s_throttle_once_and_resume_once() -> None:
    """The benchmark's pattern: 60 s of 5 s busy / 5 s idle, sampled every 0.5 s, then idle;
    resume_after_idle_s=30: one throttle, one resume, the resume 30 s after the last busy sample."""
    policy = OwnerPolicy(resume_after_idle_s=30)
    timeline = []
    for i in range(0, 200):
        at = i * 0.5
        busy = at < 60 and int(at // 5) % 2 == 0
        timeline.append((at, Readings(owner_cpus=1.5 if busy else 0.0)))

    decisions = run(policy, timeline)

    assert transitions(decisions) == ["throttled", "normal"]
    resumed_at = next(
        at for (at, _), d in zip(timeline, decisions, strict=True) if at > 1 and d.state == "normal"
    )
    assert resumed_at == 54.5 + 30


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.5, max_value=29.0), min_size=1, max_size=30),
    busy=st.lists(st.floats(min_value=0.5, max_value=10.0), min_size=1, max_size=30),
)
def test_an_owner_back_within_the_hysteresis_never_flaps_the_pool(
    gaps: list[float], busy: list[float]
) -> None:
    """Any run of busy spells with idle gaps shorter than resume_after_idle_s (30 s), sampled
    every 0.5 s, then a long idle: exactly one throttle and one resume."""
    policy = OwnerPolicy(resume_after_idle_s=30)
    spells: list[tuple[float, float]] = []
    at = 0.0
    for length, gap in zip(busy, gaps, strict=False):
        spells.append((at, at + length))
        at += length + gap
    end = spells[-1][1] + 31
    timeline = []
    t = 0.0
    while t <= end + 1:
        load = 1.0 if any(a <= t < b for a, b in spells) else 0.0
        timeline.append((t, Readings(owner_cpus=load)))
        t += 0.5

    assert transitions(run(policy, timeline)) == ["throttled", "normal"]


@settings(max_examples=300, deadline=None)
@given(
    throttle_to=st.floats(min_value=0, max_value=1),
    donated=st.floats(min_value=0.01, max_value=64),
    owner=st.floats(min_value=0, max_value=64),
    battery=st.booleans(),
    temperature=st.one_of(st.none(), st.floats(min_value=0, max_value=140)),
    hour=st.integers(min_value=0, max_value=23),
)
def test_the_pool_never_keeps_more_than_was_donated(
    throttle_to: float, donated: float, owner: float, battery: bool, temperature: float | None, hour: int
) -> None:
    """Whatever the readings: normal keeps no limit of its own (None), throttled at most the
    donated CPUs, frozen nothing."""
    window = PolicyWindow.model_validate({"days": ["mon"], "from": "10:00", "to": "14:00"})
    policy = OwnerPolicy(throttle_to=throttle_to, on_battery="throttle", windows=[window])
    decision, _ = decide(
        policy, donated, Memory(), Readings(owner, battery, temperature), MONDAY_NOON.replace(hour=hour), 0.0
    )

    if decision.state == "normal":
        assert decision.share_cpus is None
    elif decision.state == "frozen":
        assert decision.share_cpus == 0
    else:
        assert decision.share_cpus is not None
        assert 0 <= decision.share_cpus <= donated


def test_a_new_hostd_applies_its_first_decision_whatever_it_is_once_the_owner_is_known() -> None:
    """What is tried: `applies` for a hostd that has applied nothing yet (its containers as an
    earlier hostd left them), with the owner's load known or not, for each state; then for one
    that applied a decision, the same action again and another.
    What must hold: the first decision is applied even when it is "normal" (what a new hostd
    assumes), but only once the owner's load is known, a freeze excepted (nothing still to be
    read makes it stricter, and a looser one would thaw in between); after that, only a change
    of action is applied."""
    normal = Decision()
    throttled = Decision("throttled", "battery", "the machine runs on battery", 0.5)
    frozen = Decision("frozen", "battery", "the machine runs on battery", 0.0)

    assert [applies(d, None, owner_known=True) for d in (normal, throttled, frozen)] == [True, True, True]
    assert [applies(d, None, owner_known=False) for d in (normal, throttled, frozen)] == [False, False, True]
    assert not applies(normal, normal, owner_known=True)
    assert not applies(Decision("frozen", "battery", "reworded", 0.0), frozen, owner_known=True)
    assert applies(normal, throttled, owner_known=True)
    assert applies(throttled, frozen, owner_known=False)
