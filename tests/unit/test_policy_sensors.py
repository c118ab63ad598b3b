"""hostd's sensors for the owner policy: /proc/stat, cgroups, power supplies, thermal zones,
and how a throttled share is spread over containers.

Pure parsers on text as the kernel writes it, and the readers on directories laid out like
sysfs (tmp_path): what each returns, and that a machine without a battery or sensor has none.
"""

import os
from collections.abc import Hashable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.capacity import MIN_CPUS
from potluck.hostd.cpu_load import (
    OWN_PROCESS,
    CpuTicks,
    LoadMeter,
    SustainedLoad,
    cpu_usage_file,
    machine_cores,
    memory_usage_file,
    owner_cores,
    parse_proc_cgroup,
    parse_proc_stat,
    parse_process_cpu,
    parse_usage_ns,
)
from potluck.hostd.cpu_share import spread
from potluck.hostd.power import read_power
from potluck.hostd.thermal import read_temperature

PROC_STAT = """cpu  100 0 50 800 50 0 0 0 0 0
cpu0 50 0 25 400 25 0 0 0 0 0
cpu1 50 0 25 400 25 0 0 0 0 0
intr 12345
"""


def test_proc_stat_busy_leaves_out_idle_and_iowait() -> None:
    """user+system = 150 busy of 1000 ticks, two CPUs."""
    assert parse_proc_stat(PROC_STAT) == CpuTicks(busy=150, total=1000, cpus=2)


def test_machine_cores_is_the_busy_share_times_the_cpus() -> None:
    """Half of all ticks busy on a 2-CPU machine: 1 core; no ticks passed: 0."""
    before = CpuTicks(busy=0, total=0, cpus=2)
    assert machine_cores(before, CpuTicks(busy=100, total=200, cpus=2)) == 1.0
    assert machine_cores(before, before) == 0.0


def test_the_load_meter_counts_an_interval_only_between_two_different_readings(tmp_path: Path) -> None:
    """A meter given the machine's ticks three times, the second time the same reading as the
    first (a shared reading asked again too soon), with one pool container's usage file.
    Afterwards the first and the repeated reading gave no sample, and the third gave the
    machine's busy share between the two readings and the pool's use over its own interval."""
    usage = tmp_path / "cpuacct.usage"
    usage.write_text("0\n")
    meter = LoadMeter()
    first = CpuTicks(busy=100, total=1000, cpus=2)
    assert meter.sample(first, [usage], {}) is None
    assert meter.sample(first, [usage], {}) is None
    usage.write_text(f"{10**9}\n")
    sample = meter.sample(CpuTicks(busy=600, total=2000, cpus=2), [usage], {})
    assert sample is not None
    assert sample.machine == pytest.approx(1.0)
    assert sample.containers > 0
    assert sample.outside == 0


def test_work_hostd_and_the_shims_do_for_the_pool_is_not_the_owners(tmp_path: Path) -> None:
    """Over one second of a 2-CPU machine kept 1.5 cores busy: the pool's container used 0.25
    of a core in its cgroup, hostd 0.75 (relaying a user's transfer into it) and the container's
    shim 0.25 (carrying its stdio), read as outside_usage_ns keys them. Afterwards the owner's
    use is 0.25 of a core, under the default owner_busy_cpus of 0.5: before, hostd's and the
    shim's work counted as the owner's, 1.25 cores, and the pool was throttled for its own
    transfer. A PID that another process took meanwhile (a new start time) is not counted as
    the shim's, nor a process read only once."""
    now = [100.0]
    meter = LoadMeter(clock=lambda: now[0])
    usage = tmp_path / "cpuacct.usage"
    usage.write_text("0\n")
    shim, reused = (4242, 700), (4343, 800)
    first: dict[Hashable, int] = {OWN_PROCESS: 5 * 10**9, shim: 10**9, reused: 0}
    assert meter.sample(CpuTicks(busy=0, total=1000, cpus=2), [usage], first) is None
    now[0] += 1.0
    usage.write_text(f"{250 * 10**6}\n")
    later: dict[Hashable, int] = {
        OWN_PROCESS: 5 * 10**9 + 750 * 10**6,
        shim: 10**9 + 250 * 10**6,
        (4343, 900): 10**9,
    }
    sample = meter.sample(CpuTicks(busy=750, total=2000, cpus=2), [usage], later)
    assert sample is not None
    assert sample.machine == pytest.approx(1.5)
    assert sample.containers == pytest.approx(0.25)
    assert sample.outside == pytest.approx(1.0)
    assert sample.owner == pytest.approx(0.25)


def test_a_process_stat_gives_its_start_and_cpu_time_whatever_its_name_holds() -> None:
    """/proc/PID/stat of a process named "a) (b": the fields are read after the last ")"."""
    fields = ["S", "1", *["0"] * 9, "150", "50", *["0"] * 6, "123456", "0"]
    text = "4242 (a) (b) " + " ".join(fields) + "\n"
    start, used = parse_process_cpu(text)
    assert start == 123456
    assert used == 200 * 10**9 // os.sysconf("SC_CLK_TCK")


def test_the_owner_is_the_machine_less_the_pool_never_below_zero() -> None:
    """1.5 machine, 1.0 pool: 0.5 owner; pool sampled a bit higher than the machine: 0."""
    assert owner_cores(1.5, 1.0) == 0.5
    assert owner_cores(1.0, 1.2) == 0.0


def test_cgroup_files_are_found_for_cgroup_v1_and_v2(tmp_path: Path) -> None:
    """/proc/<pid>/cgroup of a v1 (cgroupfs) container points into cpuacct/ and memory/;
    a v2 one into the unified tree (cpu.stat, memory.current)."""
    v1 = parse_proc_cgroup("4:memory:/docker/abc\n2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/\n")
    (tmp_path / "cpuacct/docker/abc").mkdir(parents=True)
    (tmp_path / "cpuacct/docker/abc/cpuacct.usage").write_text("5000000000\n")
    (tmp_path / "memory/docker/abc").mkdir(parents=True)
    (tmp_path / "memory/docker/abc/memory.usage_in_bytes").write_text("1024\n")
    v2 = parse_proc_cgroup("0::/system.slice/docker-def.scope\n")
    (tmp_path / "system.slice/docker-def.scope").mkdir(parents=True)
    (tmp_path / "system.slice/docker-def.scope/cpu.stat").write_text("usage_usec 2500000\nuser_usec 1\n")
    (tmp_path / "system.slice/docker-def.scope/memory.current").write_text("2048\n")

    v1_cpu = cpu_usage_file(v1, tmp_path)
    v2_cpu = cpu_usage_file(v2, tmp_path)

    assert v1_cpu == tmp_path / "cpuacct/docker/abc/cpuacct.usage"
    assert parse_usage_ns(v1_cpu.name, v1_cpu.read_text()) == 5_000_000_000
    assert v2_cpu == tmp_path / "system.slice/docker-def.scope/cpu.stat"
    assert parse_usage_ns(v2_cpu.name, v2_cpu.read_text()) == 2_500_000_000
    assert memory_usage_file(v1, tmp_path) == tmp_path / "memory/docker/abc/memory.usage_in_bytes"
    assert memory_usage_file(v2, tmp_path) == tmp_path / "system.slice/docker-def.scope/memory.current"
    assert cpu_usage_file(parse_proc_cgroup("0::/gone\n"), tmp_path) is None


def test_a_one_second_spike_does_not_count_as_busy() -> None:
    """Samples every 0.5 s over a 1.5 s span: a 1 s spike leaves a low sample in every full
    span; 2 s of steady load is seen as that load; before the span is covered, nothing."""
    spike = SustainedLoad(1.5)
    levels = []
    for i, load in enumerate([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]):
        spike.add(i * 0.5, load)
        levels.append(spike.level())
    steady = SustainedLoad(1.5)
    for i in range(5):
        steady.add(i * 0.5, 1.2)

    assert levels[:3] == [None, None, None]
    assert all(level is not None and level < 0.5 for level in levels[3:])
    assert steady.level() == 1.2


def supply(root: Path, name: str, **files: str) -> None:
    (root / name).mkdir(parents=True)
    for key, value in files.items():
        (root / name / key).write_text(value + "\n")


def test_power_supplies_say_when_the_machine_runs_on_battery(tmp_path: Path) -> None:
    """No supplies: no battery. A charging battery with the charger online (1, or 2 as a USB-C
    charger says it): plugged in. A discharging battery, or a battery whose chargers all say
    they are offline: on battery. A charger whose `online` is missing or unreadable (a supply
    seen half made, a failed read): not evidence of being unplugged."""
    assert read_power(tmp_path / "none").has_battery is False
    plugged = tmp_path / "plugged"
    supply(plugged, "BAT0", type="Battery", status="Charging")
    supply(plugged, "AC", type="Mains", online="1")
    discharging = tmp_path / "discharging"
    supply(discharging, "BAT0", type="Battery", status="Discharging")
    unplugged = tmp_path / "unplugged"
    supply(unplugged, "BAT0", type="Battery", status="Unknown")
    supply(unplugged, "AC", type="Mains", online="0")
    desktop = tmp_path / "desktop"
    supply(desktop, "usb-c", type="USB", online="0")
    usb_pd = tmp_path / "usb-pd"
    supply(usb_pd, "BAT0", type="Battery", status="Not charging")
    supply(usb_pd, "ucsi-source-psy-0", type="USB", online="2")
    unknown = tmp_path / "unknown"
    supply(unknown, "BAT0", type="Battery", status="Full")
    supply(unknown, "AC", type="Mains")
    one_of_two = tmp_path / "one-of-two"
    supply(one_of_two, "BAT0", type="Battery", status="Full")
    supply(one_of_two, "AC", type="Mains", online="0")
    supply(one_of_two, "usb-c", type="USB", online="1")

    assert read_power(plugged).on_battery is False
    assert read_power(plugged).has_battery is True
    assert read_power(discharging).on_battery is True
    assert read_power(unplugged).on_battery is True
    assert read_power(desktop).has_battery is False
    assert read_power(desktop).on_battery is False
    assert read_power(usb_pd).on_battery is False
    assert read_power(unknown).on_battery is False
    assert read_power(one_of_two).on_battery is False


def test_the_temperature_is_the_hottest_zone_or_none(tmp_path: Path) -> None:
    """Zones at 45.5 and 91 °C: 91; no zone (or an unreadable one only): None."""
    for name, value in (("thermal_zone0", "45500"), ("thermal_zone1", "91000"), ("cooling_device0", "3")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "temp").write_text(value + "\n")
    broken = tmp_path / "broken"
    (broken / "thermal_zone0").mkdir(parents=True)
    (broken / "thermal_zone0" / "temp").write_text("n/a\n")

    assert read_temperature(tmp_path) == 91.0
    assert read_temperature(tmp_path / "missing") is None
    assert read_temperature(broken) is None


@given(
    requested=st.dictionaries(
        st.text(min_size=1, max_size=4), st.floats(min_value=MIN_CPUS, max_value=16), min_size=1, max_size=8
    ),
    fraction=st.floats(min_value=0, max_value=1),
)
def test_a_throttled_share_is_spread_without_exceeding_any_request(
    requested: dict[str, float], fraction: float
) -> None:
    """Each container keeps at most what it asked for and at least the engine's minimum; all
    together keep at most the share, plus at most the minimum for each container the floor lifted."""
    share = fraction * sum(requested.values())

    quotas = spread(requested, share)

    assert quotas.keys() == requested.keys()
    for key, cpus in quotas.items():
        assert MIN_CPUS <= cpus <= max(MIN_CPUS, requested[key])
    lifted = sum(1 for key in requested if share * requested[key] / sum(requested.values()) < MIN_CPUS)
    assert sum(quotas.values()) <= share + MIN_CPUS * lifted + 1e-9
    assert spread(requested, None) == requested
