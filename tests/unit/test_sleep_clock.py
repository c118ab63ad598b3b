"""Sleep detection from CLOCK_BOOTTIME running ahead of CLOCK_MONOTONIC, with the clocks injected
(a suspend cannot be caused in a test; two counters stand for the kernel's clocks)."""

import time

import pytest

from potluck.hostd.sleep_clock import SleepClock, boottime, monotonic


class Clocks:
    """A machine's two clocks: `run` advances both, `suspend` only the boot-time one."""

    def __init__(self) -> None:
        self.boot = 1000.0
        self.mono = 900.0

    def run(self, seconds: float) -> None:
        self.boot += seconds
        self.mono += seconds

    def suspend(self, seconds: float) -> None:
        self.boot += seconds


def clock(clocks: Clocks, threshold_s: float = 2.0) -> SleepClock:
    return SleepClock(boottime=lambda: clocks.boot, monotonic=lambda: clocks.mono, threshold_s=threshold_s)


def test_running_without_a_suspend_is_no_sleep_however_long() -> None:
    """Both clocks advance together for a day: nothing slept."""
    clocks = Clocks()
    watch = clock(clocks)
    clocks.run(86400)
    assert watch.woke() is None


def test_a_suspend_past_the_threshold_is_told_once_with_its_length() -> None:
    """Suspended 3600 s between two looks: woke() says 3600 once; the next look says nothing."""
    clocks = Clocks()
    watch = clock(clocks)
    clocks.run(5)
    clocks.suspend(3600)
    clocks.run(1)
    assert watch.woke() == pytest.approx(3600)
    clocks.run(10)
    assert watch.woke() is None


def test_a_suspend_within_the_threshold_is_not_a_wake_but_is_still_measured() -> None:
    """A 1.5 s suspend with a 2 s threshold: woke() says None; slept() would have said 1.5."""
    clocks = Clocks()
    watch = clock(clocks)
    clocks.suspend(1.5)
    assert watch.woke() is None
    other = clock(clocks)
    clocks.suspend(1.5)
    assert other.slept() == pytest.approx(1.5)


def test_each_look_measures_from_the_last_so_two_sleeps_are_two() -> None:
    """Two suspends with a look between: each is told with its own length."""
    clocks = Clocks()
    watch = clock(clocks)
    clocks.suspend(60)
    assert watch.woke() == pytest.approx(60)
    clocks.run(30)
    clocks.suspend(120)
    assert watch.woke() == pytest.approx(120)


def test_a_clock_read_going_backwards_is_never_a_negative_sleep() -> None:
    """The monotonic clock read a little late (reads are not atomic): slept() is 0, not negative."""
    clocks = Clocks()
    watch = clock(clocks)
    clocks.mono += 0.01
    assert watch.slept() == 0.0


def test_a_threshold_must_be_positive() -> None:
    """threshold_s 0 is refused, naming the field."""
    with pytest.raises(ValueError, match="threshold_s"):
        SleepClock(threshold_s=0)


def test_the_real_clocks_of_this_machine_agree_while_it_runs() -> None:
    """The kernel's own CLOCK_BOOTTIME and CLOCK_MONOTONIC: no sleep across a short wait, and
    the boot-time clock is never behind the monotonic one."""
    watch = SleepClock()
    time.sleep(0.05)
    assert watch.woke() is None
    before = monotonic()
    assert boottime() >= before
