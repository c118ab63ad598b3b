"""Machine readings shared by policy runners (machine_sensors.py), on real files in a temporary
directory standing for /proc/stat, /sys/class/power_supply and /sys/class/thermal."""

import asyncio
from pathlib import Path

import pytest

from potluck.hostd.machine_sensors import MachineReading, MachineSensors


def _machine(root: Path, busy: int, temp_millic: int = 55000) -> MachineSensors:
    (root / "power").mkdir(exist_ok=True)
    zone = root / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "temp").write_text(f"{temp_millic}\n")
    _ticks(root, busy)
    return MachineSensors(root / "power", root / "thermal", fresh_for_s=0.2, proc_stat=root / "stat")


def _ticks(root: Path, busy: int) -> None:
    (root / "stat").write_text(f"cpu  {busy} 0 0 1000 0 0 0 0 0 0\ncpu0 {busy} 0 0 1000 0 0 0 0 0 0\n")


def test_runners_asking_together_share_one_read(tmp_path: Path) -> None:
    """200 runners ask at once. Afterwards the files were read once and every runner got that
    same reading, with the machine's ticks and temperature."""
    sensors = _machine(tmp_path, busy=300)

    async def ask_all() -> list[MachineReading]:
        return list(await asyncio.gather(*(sensors.read() for _ in range(200))))

    readings = asyncio.run(ask_all())
    assert sensors.reads == 1
    assert all(r is readings[0] for r in readings)
    first = readings[0]
    assert first.ticks.busy == 300
    assert first.temperature_c == 55.0


def test_a_reading_older_than_fresh_for_is_read_again_and_shows_the_change(tmp_path: Path) -> None:
    """A reading, the machine's ticks and temperature change, a second ask within fresh_for_s,
    then one after it. Afterwards the second ask got the first reading, the third the new one."""
    sensors = _machine(tmp_path, busy=300)

    async def three() -> tuple[int, int, int]:
        first = await sensors.read()
        _ticks(tmp_path, 700)
        second = await sensors.read()
        await asyncio.sleep(sensors.fresh_for_s + 0.05)
        third = await sensors.read()
        return first.ticks.busy, second.ticks.busy, third.ticks.busy

    assert asyncio.run(three()) == (300, 300, 700)
    assert sensors.reads == 2


def test_a_failed_read_reaches_every_asker_and_is_not_kept(tmp_path: Path) -> None:
    """/proc/stat unreadable while three runners ask, then readable again. Afterwards all three
    got the error, and the next ask read the file again instead of keeping the failure."""
    sensors = _machine(tmp_path, busy=300)
    (tmp_path / "stat").unlink()

    async def failing_then_back() -> tuple[list[BaseException | object], int]:
        got = await asyncio.gather(*(sensors.read() for _ in range(3)), return_exceptions=True)
        _ticks(tmp_path, 400)
        return list(got), (await sensors.read()).ticks.busy

    got, busy = asyncio.run(failing_then_back())
    assert all(isinstance(g, FileNotFoundError) for g in got)
    assert busy == 400


def test_a_cancelled_asker_does_not_cancel_the_read_others_wait_for(tmp_path: Path) -> None:
    """Two runners ask; the first is cancelled at once. Afterwards the second still got the
    reading, and it was read once."""
    sensors = _machine(tmp_path, busy=300)

    async def one_cancelled() -> int:
        first = asyncio.ensure_future(sensors.read())
        second = asyncio.ensure_future(sensors.read())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return (await second).ticks.busy

    assert asyncio.run(one_cancelled()) == 300
    assert sensors.reads == 1
