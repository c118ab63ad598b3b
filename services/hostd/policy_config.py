"""The owner policy's settings: hostd's `[policy]` table (documented in config.py's docstring).

Its own model so that the rest of hostd's configuration can grow without touching it; every
value is validated at start and a bad one names its field (`policy.windows.0.from: ...`).
"""

from datetime import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#: Monday first, as datetime.weekday() counts.
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OnOwnerBusy = Literal["throttle", "freeze", "ignore"]
OnBattery = Literal["freeze", "throttle", "run"]
WindowAction = Literal["throttle", "freeze"]
#: How far below max_temperature_c the machine must cool before the pool gets its share back.
HEAT_HYSTERESIS_C = 5.0


def _clock_time(value: object) -> time:
    if not isinstance(value, str):
        raise ValueError('must be a time of day as a string, e.g. "09:00"')
    if value == "24:00":
        return time.max
    try:
        hours, minutes = value.split(":")
        if len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day HH:MM between 00:00 and 24:00") from None


class PolicyWindow(BaseModel):
    """Hours (local clock) on some days when the pool gets less or nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    days: list[Day] = Field(min_length=1)
    # `to` first: `from` is checked against it, and pydantic validates in declaration order.
    end: time = Field(alias="to")
    start: time = Field(alias="from")
    action: WindowAction = "throttle"

    @field_validator("end", mode="before")
    @classmethod
    def _end(cls, value: object) -> time:
        return _clock_time(value)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: object, info: ValidationInfo) -> time:
        start = _clock_time(value)
        end = info.data.get("end")
        if end is not None and start >= end:
            raise ValueError(
                f"{value} is not before `to` ({end:%H:%M}); a window ends the day it starts "
                "(make two windows to span midnight)"
            )
        return start

    def covers(self, weekday: int, at: time) -> bool:
        """Does the window hold at `at` on `weekday` (0 = Monday)?"""
        return DAYS[weekday] in self.days and self.start <= at < self.end

    def _to(self) -> str:
        return "24:00" if self.end == time.max else f"{self.end:%H:%M}"

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start:%H:%M}-{self._to()}"

    def as_toml(self) -> dict[str, object]:
        start = f"{self.start:%H:%M}"
        return {"days": list(self.days), "from": start, "to": self._to(), "action": self.action}


class OwnerPolicy(BaseModel):
    """What the pool's containers yield to the machine's owner, battery, heat and hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner_busy_cpus: float = Field(default=0.5, gt=0, le=1024)
    on_owner_busy: OnOwnerBusy = "throttle"
    throttle_to: float = Field(default=0.25, ge=0, le=1)
    resume_after_idle_s: float = Field(default=30.0, ge=0, le=86400)
    on_battery: OnBattery = "freeze"
    max_temperature_c: float = Field(default=85.0, gt=HEAT_HYSTERESIS_C, le=150)
    max_frozen_s: float = Field(default=3600.0, gt=0)
    windows: list[PolicyWindow] = Field(default_factory=list)
    power_supply_dir: str = "/sys/class/power_supply"
    thermal_dir: str = "/sys/class/thermal"
    sample_interval_s: float = Field(default=0.5, gt=0, le=2)
    #: The owner's load must stay above owner_busy_cpus this long to count as busy.
    busy_after_s: float = Field(default=1.5, ge=0, le=60)

    def as_toml(self) -> dict[str, object]:
        data = self.model_dump(exclude={"windows"})
        data["windows"] = [w.as_toml() for w in self.windows]
        return data
