"""Did this machine just sleep? The boot-time clock says so, the monotonic clock does not.

CLOCK_BOOTTIME and CLOCK_MONOTONIC tick together while the machine runs, and
only CLOCK_BOOTTIME goes on counting while it is suspended. So the gap between
them grows by exactly the time spent asleep, and by nothing else (NTP slews
both alike). Sampling that gap now and then tells, on waking, that the machine
slept and for how long, whether or not anybody announced it.

The clocks are injected (`SleepClock(boottime=..., monotonic=...)`): a suspend
cannot be caused in a test, two counters can.
"""

import time
from collections.abc import Callable

__all__ = ["DEFAULT_THRESHOLD_S", "SleepClock", "boottime", "monotonic"]

#: Gaps shorter than this are not worth telling anyone about (and not worth a re-sync).
DEFAULT_THRESHOLD_S = 2.0

Clock = Callable[[], float]


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class SleepClock:
    """The time spent suspended since the last look, read off the two clocks."""

    def __init__(
        self,
        *,
        boottime: Clock = boottime,
        monotonic: Clock = monotonic,
        threshold_s: float = DEFAULT_THRESHOLD_S,
    ) -> None:
        if threshold_s <= 0:
            raise ValueError(f"threshold_s must be positive, not {threshold_s}")
        self._boottime = boottime
        self._monotonic = monotonic
        self.threshold_s = threshold_s
        self._gap = self._read()

    def _read(self) -> float:
        return self._boottime() - self._monotonic()

    def now(self) -> float:
        """The boot-time clock: time that goes on while the machine sleeps."""
        return self._boottime()

    def slept(self) -> float:
        """Seconds suspended since the last look (never negative); the next look starts from here."""
        gap = self._read()
        slept = max(0.0, gap - self._gap)
        self._gap = gap
        return slept

    def woke(self) -> float | None:
        """`slept()` when it is past the threshold: the machine slept and woke; else None."""
        slept = self.slept()
        return slept if slept > self.threshold_s else None
