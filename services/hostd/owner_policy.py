"""The owner policy's decision: pure, from readings, the local clock and what it remembers.

`decide` returns the pool's state here (normal, throttled, frozen), what caused it, a
reason a person can read, and the CPUs the pool keeps, plus the memory the next call
needs. Freezing beats throttling; among causes of the same action the first of heat,
battery, owner, window names it. Hysteresis keeps it from flapping: once busy, the owner
must stay idle `resume_after_idle_s` before the pool gets its share back, and a hot
machine must cool 5 degrees below `max_temperature_c` (a reading that fails meanwhile is not
a cooler machine). Windows go by the local clock the
caller passes in.
"""

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from potluck.contracts.host_events import PolicyCause
from potluck.hostd.policy_config import HEAT_HYSTERESIS_C, OwnerPolicy

PolicyState = Literal["normal", "throttled", "frozen"]
_CAUSE_ORDER: tuple[PolicyCause, ...] = ("heat", "battery", "owner", "window")


@dataclass(frozen=True)
class Readings:
    """What hostd read. `owner_cpus`: the owner's load sustained over the smoothing span
    (None until known); `temperature_c` None: no sensor."""

    owner_cpus: float | None = None
    on_battery: bool = False
    temperature_c: float | None = None


@dataclass(frozen=True)
class Memory:
    """What the decision keeps between calls (monotonic seconds)."""

    owner_busy_at: float | None = None
    owner_peak_cpus: float = 0.0
    hot: bool = False


@dataclass(frozen=True)
class Decision:
    state: PolicyState = "normal"
    cause: PolicyCause | None = None
    reason: str = ""
    #: The CPUs the whole pool keeps: the throttled share, 0 when frozen, None when normal.
    share_cpus: float | None = None

    def same_action(self, other: "Decision") -> bool:
        """Would the containers be set the same way (the reason's wording aside)?"""
        return (self.state, self.cause, self.share_cpus) == (other.state, other.cause, other.share_cpus)


def applies(decision: Decision, applied: Decision | None, *, owner_known: bool) -> bool:
    """Must `decision` be applied to the containers, `applied` being the one last applied (None:
    none yet, since hostd started)? After a start the containers are as an earlier hostd left
    them, perhaps frozen or throttled; so the first decision is applied whatever it is, even
    "normal", but not before the owner's load is known (`owner_known`): a decision without it
    may be looser than the one it leads to, and would thaw or unthrottle for the moment
    between. Only a freeze goes out before: the owner's load can make no decision stricter.
    After that, a decision is applied when its action changes."""
    if applied is None:
        return owner_known or decision.state == "frozen"
    return not decision.same_action(applied)


def throttled_share(policy: OwnerPolicy, donated_cpus: float) -> float:
    # Down to a thousandth: never above what was donated.
    return math.floor(policy.throttle_to * donated_cpus * 1000) / 1000


def decide(
    policy: OwnerPolicy,
    donated_cpus: float,
    memory: Memory,
    readings: Readings,
    now_local: datetime,
    at: float,
) -> tuple[Decision, Memory]:
    """The state the pool should be in at monotonic time `at` (local wall clock `now_local`)."""
    wanted: list[tuple[Literal["throttle", "freeze"], PolicyCause, str]] = []

    memory, owner_reason = _owner(policy, memory, readings, at)
    if owner_reason and policy.on_owner_busy != "ignore":
        wanted.append((policy.on_owner_busy, "owner", owner_reason))

    if readings.on_battery and policy.on_battery != "run":
        wanted.append((policy.on_battery, "battery", "the machine runs on battery"))

    heat_reason = _heat(policy, memory, readings.temperature_c)
    memory = replace(memory, hot=bool(heat_reason))
    if heat_reason:
        wanted.append(("throttle", "heat", heat_reason))

    for window in policy.windows:
        if window.covers(now_local.weekday(), now_local.time()):
            wanted.append((window.action, "window", f"the member's hours ({window.describe()})"))
            break

    if not wanted:
        return Decision(), memory
    action = "freeze" if any(a == "freeze" for a, _, _ in wanted) else "throttle"
    chosen = sorted((c for c in wanted if c[0] == action), key=lambda c: _CAUSE_ORDER.index(c[1]))[0]
    if action == "freeze":
        return Decision("frozen", chosen[1], chosen[2], 0.0), memory
    return Decision("throttled", chosen[1], chosen[2], throttled_share(policy, donated_cpus)), memory


def _heat(policy: OwnerPolicy, memory: Memory, temperature: float | None) -> str:
    """Why the machine counts as hot (""; not hot). A sensor that does not answer (None) is not
    a machine that cooled: thermal zones can fail a read for a moment (EIO, EAGAIN while a zone
    wakes), and a hot machine stays throttled until a reading says it is below the mark. A
    machine never read hot with no sensor stays normal."""
    back_below = policy.max_temperature_c - HEAT_HYSTERESIS_C
    limits = f"max {policy.max_temperature_c:g} °C; back below {back_below:g} °C"
    if temperature is None:
        return f"the temperature cannot be read and the machine was last hot ({limits})" if memory.hot else ""
    if temperature >= policy.max_temperature_c or (memory.hot and temperature > back_below):
        return f"the machine is at {temperature:.0f} °C ({limits})"
    return ""


def _owner(policy: OwnerPolicy, memory: Memory, readings: Readings, at: float) -> tuple[Memory, str]:
    """The owner's part: busy now, or busy less than `resume_after_idle_s` ago (reason), or not ("")."""
    load = readings.owner_cpus
    if load is not None and load >= policy.owner_busy_cpus:
        peak = max(load, memory.owner_peak_cpus) if memory.owner_busy_at is not None else load
        memory = replace(memory, owner_busy_at=at, owner_peak_cpus=peak)
        return memory, f"the owner uses {load:.1f} CPUs (busy from {policy.owner_busy_cpus:g})"
    if memory.owner_busy_at is None:
        return memory, ""
    idle_for = at - memory.owner_busy_at
    if idle_for < policy.resume_after_idle_s:
        return memory, (
            f"the owner used {memory.owner_peak_cpus:.1f} CPUs; the pool's share comes back after "
            f"{policy.resume_after_idle_s:g} s idle"
        )
    return Memory(hot=memory.hot), ""
