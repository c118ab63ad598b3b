"""The machine's own readings for the owner policy: its CPU ticks, its power supply, its
temperature, read together in one thread hop.

A member's hostd has one policy runner, which asks once per sample interval: every reading is
fresh. Hollow hosts (hollow_hosts.py) are thousands of runners in one process on one machine,
each asking every 2 s for the same machine's figures; measured at 2,000 of them, reading
/proc/stat, the power supplies and the thermal zones, and the thread hops to do it, were over
half of the process's CPU. So a reading younger than `fresh_for_s` is given to whoever asks,
and runners asking while one is being read wait for that one. Each runner's policy still
decides on its own, from readings of the machine it runs on.

The reads stay off the event loop: a battery's files can take an ACPI query each.
"""

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from potluck.hostd.cpu_load import CpuTicks, parse_proc_stat
from potluck.hostd.power import PowerReading, read_power
from potluck.hostd.thermal import read_temperature

__all__ = ["MachineReading", "MachineSensors"]

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class MachineReading:
    at: float  # time.monotonic() when read
    ticks: CpuTicks
    power: PowerReading
    temperature_c: float | None


class MachineSensors:
    """Readings of this machine, shared by every policy runner given the same instance."""

    def __init__(
        self,
        power_supply_dir: Path,
        thermal_dir: Path,
        *,
        fresh_for_s: float,
        proc_stat: Path = PROC_STAT,
    ) -> None:
        self.power_supply_dir = power_supply_dir
        self.thermal_dir = thermal_dir
        self.fresh_for_s = fresh_for_s
        self.proc_stat = proc_stat
        self.reads = 0
        self._last: MachineReading | None = None
        self._reading: asyncio.Future[MachineReading] | None = None

    async def read(self) -> MachineReading:
        last = self._last
        if last is not None and time.monotonic() - last.at < self.fresh_for_s:
            return last
        if self._reading is None:
            self._reading = asyncio.ensure_future(asyncio.to_thread(self._read))
            self._reading.add_done_callback(self._done)
        # Shielded: one asker cancelled does not cancel the read the others wait for.
        return await asyncio.shield(self._reading)

    def _done(self, reading: "asyncio.Future[MachineReading]") -> None:
        self._reading = None
        if not reading.cancelled() and reading.exception() is None:
            self._last = reading.result()

    def _read(self) -> MachineReading:
        self.reads += 1
        ticks = parse_proc_stat(self.proc_stat.read_text())
        at = time.monotonic()
        return MachineReading(
            at=at,
            ticks=ticks,
            power=read_power(self.power_supply_dir),
            temperature_c=read_temperature(self.thermal_dir),
        )
