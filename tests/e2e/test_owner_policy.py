"""The owner policy against a real hostd, a real Docker engine and the container's cgroups.

Each cause (the owner's load, the battery, heat, a window) makes hostd throttle or freeze the
pool's container and then give its share back; every step is read where the kernel keeps it
(the CPU quota: cgroup v1 cpu.cfs_quota_us or v2 cpu.max; the freezer: v1 freezer.state or
v2 cgroup.freeze, and `docker inspect` State.Paused). Battery and heat come from directories
laid out like /sys/class/power_supply and /sys/class/thermal; the owner is a real CPU-bound
process outside the containers. The registry records each change, `potluck ops replay
--check` agrees with it, and `potluck host status` shows it to the member.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from potluck.contracts.host_events import host_stream
from potluck.hostd.docker_driver import DockerDriver, EngineUnavailable
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import hostd_started_with, ops, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool, place, spec

# Only the tests that measure the machine are marked solo (tests/fixtures/solo.py). The others
# run beside another test: their policy ignores the owner's load (quiet_policy), and battery,
# heat and windows come from the test's own folders and clock.
CGROUP = Path("/sys/fs/cgroup")
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#: Fast enough for a test: sampled every 0.2 s, busy after 1 s, back after 2 s idle.
FAST = {"sample_interval_s": 0.2, "busy_after_s": 1.0, "resume_after_idle_s": 2}
#: The allocation asks for 1 of the 2 donated CPUs: throttled to a quarter of the donation
#: (0.5 CPUs), its quota is 0.5.
FULL, THROTTLED = 1.0, 0.5


def sysfs_write(path: Path, text: str) -> None:
    """Replace the file whole, as sysfs shows a value: a reader never sees it half-written
    (hostd's own tolerance of failed reads is tested in tests/unit/test_owner_policy.py)."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


class Machine:
    """A hostd on a private engine, its sysfs-shaped power and thermal folders, one container."""

    def __init__(
        self, pool: Pool, engine: DockerEngine, host: EnrolledHost, power: Path, thermal: Path
    ) -> None:
        self.pool = pool
        self.engine = engine
        self.host = host
        self.power = power
        self.thermal = thermal

    def inspect(self, alloc_id: str) -> dict[str, Any]:
        with DockerDriver(self.engine.url) as driver:
            found = [c for c in driver.list_managed(self.host.host_id) if c.allocation_id == alloc_id]
            assert found, f"no container for {alloc_id}"
            return driver.inspect(found[0].container_id)

    def cgroup(self, alloc_id: str, controller: str) -> Path:
        """The container's cgroup folder for `controller` (v1), or its unified one (v2)."""
        pid = int(self.inspect(alloc_id)["State"]["Pid"])
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return CGROUP / controllers / path.lstrip("/")
        unified = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        return CGROUP / unified.lstrip("/")

    def cpu_limit(self, alloc_id: str) -> float | None:
        """The CPUs the kernel lets the container use (None: no limit)."""
        folder = self.cgroup(alloc_id, "cpu")
        if (folder / "cpu.max").exists():
            quota, period = (folder / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        return None if quota_us < 0 else quota_us / int((folder / "cpu.cfs_period_us").read_text())

    def full_and_running(self, alloc_id: str) -> bool:
        return self.cpu_limit(alloc_id) == FULL and self.freezer(alloc_id) == (False, False)

    def frozen(self, alloc_id: str) -> bool:
        """Frozen in the cgroup and paused as the engine says."""
        return self.freezer(alloc_id) == (True, True)

    def freezer(self, alloc_id: str) -> tuple[bool, bool]:
        """(frozen in the cgroup, paused as `docker inspect` says)."""
        folder = self.cgroup(alloc_id, "freezer")
        if (folder / "cgroup.freeze").exists():
            in_cgroup = (folder / "cgroup.freeze").read_text().strip() == "1"
        else:
            in_cgroup = (folder / "freezer.state").read_text().strip() == "FROZEN"
        return in_cgroup, bool(self.inspect(alloc_id)["State"]["Paused"])

    async def until(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if await asyncio.to_thread(check):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"never: {what}\n{self.pool.logs(60)}")
            await asyncio.sleep(0.2)

    async def policy(self) -> tuple[str, str | None, str]:
        state = (await self.pool.hosts()).hosts[self.host.host_id]
        return state.policy, state.policy_cause, state.policy_reason

    async def until_recorded(self, state: str, cause: str | None) -> None:
        deadline = time.monotonic() + 60
        while (await self.policy())[:2] != (state, cause):
            if time.monotonic() > deadline:
                raise AssertionError(f"the registry has {await self.policy()}, not {state} by {cause}")
            await asyncio.sleep(0.2)

    async def events(self) -> list[str]:
        """The owner policy's events in the host's stream, in order."""
        events = await self.pool.store.read_stream(host_stream(self.host.host_id))
        return [e.type for e in events if e.type in POLICY_EVENTS]

    def on_battery(self, discharging: bool) -> None:
        battery, mains = self.power / "BAT0", self.power / "AC"
        battery.mkdir(parents=True, exist_ok=True)
        mains.mkdir(parents=True, exist_ok=True)
        sysfs_write(battery / "type", "Battery\n")
        sysfs_write(battery / "status", "Discharging\n" if discharging else "Charging\n")
        sysfs_write(mains / "type", "Mains\n")
        sysfs_write(mains / "online", "0\n" if discharging else "1\n")

    def temperature(self, celsius: float) -> None:
        self._zone_reads(f"{round(celsius * 1000)}\n")

    def sensor_fails(self) -> None:
        """The zone answers with something that is not a temperature."""
        self._zone_reads("not a number\n")

    def _zone_reads(self, text: str) -> None:
        zone = self.thermal / "thermal_zone0"
        zone.mkdir(parents=True, exist_ok=True)
        sysfs_write(zone / "temp", text)

    def member(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "potluck", "host", *args, "--config", str(self.host.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


POLICY_EVENTS = ("HostThrottled", "HostFrozen", "HostShareRestored")


async def machine(
    pool: Pool, engine: DockerEngine, name: str, *, donate: dict[str, Any] | None = None, **policy: Any
) -> Machine:
    """Enrolled, configured with a fast policy reading its own sysfs-shaped folders, running."""
    host = await pool.enroll(name)
    power, thermal = pool.workdir / f"{name}-sysfs-power", pool.workdir / f"{name}-sysfs-thermal"
    power.mkdir()
    thermal.mkdir()
    settings = {**FAST, "power_supply_dir": str(power), "thermal_dir": str(thermal), **policy}
    extra = {"donate": donate} if donate else {}
    pool.write_config(host, engine, policy=pool.quiet_policy(host, **settings), **extra)
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    return Machine(pool, engine, host, power, thermal)


async def running(m: Machine, alloc_id: str, **wanted: Any) -> None:
    await place(m.pool.store, m.host.host_id, alloc_id, spec(cpus=FULL, **wanted))
    await wait_for_status(m.pool, alloc_id, "running")


@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_the_battery_throttles_or_freezes_and_mains_gives_the_share_back(
    pool: Pool, docker_engines: list[DockerEngine], action: str, database_url: str
) -> None:
    """Plugged in, the container has its full quota. Unplugged (Discharging, mains offline):
    throttled to 0.5 CPUs or frozen in the cgroup, HostThrottled/HostFrozen by the battery in the
    log, and `potluck host status` shows it with the battery hostd read. Plugged in again: full
    quota, thawed, HostShareRestored; the registry's live view agrees with a replay of the log."""
    m = await machine(pool, docker_engines[0], f"battery-{action}", on_battery=action)
    m.on_battery(False)
    await running(m, "unplug")
    assert m.cpu_limit("unplug") == FULL

    m.on_battery(True)
    if action == "throttle":
        await m.until("throttled to 0.5 CPUs", lambda: m.cpu_limit("unplug") == THROTTLED)
        await m.until_recorded("throttled", "battery")
    else:
        await m.until("frozen", lambda: m.frozen("unplug"))
        await m.until_recorded("frozen", "battery")
    shown = await asyncio.to_thread(m.member, "status")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    expected = "throttled" if action == "throttle" else "frozen"
    assert status["policy"]["state"] == expected
    assert status["policy"]["reason"] == "the machine runs on battery"
    assert status["hostd"]["policy"]["state"] == expected
    assert status["hostd"]["battery"]["on_battery"] is True
    assert status["hostd"]["temperature"] == "no sensor"
    assert status["hostd"]["donated"]["cpus"] == 2
    # What hostd and the container's shim used for the pool, told apart from the owner's use.
    assert isinstance(status["hostd"]["pool"]["outside_cpus"], float), status["hostd"]["pool"]
    assert status["hostd"]["pool"]["outside_cpus"] >= 0
    assert status["hostd"]["transitions"][-1]["cause"] == "battery"

    m.on_battery(False)
    await m.until("the full quota back, thawed", lambda: m.full_and_running("unplug"))
    await m.until_recorded("normal", None)
    first = "HostThrottled" if action == "throttle" else "HostFrozen"
    assert await m.events() == [first, "HostShareRestored"]
    code, out, err = await ops(
        "replay", "--check", "--database-url", database_url, "--nats-url", pool.nats.url,
        "--nats-seed-file", str(pool.services_seed_file),
    )  # fmt: skip
    assert code == 0, out + err
    assert "registry at position" in out


async def test_heat_throttles_until_the_machine_cools_five_degrees(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """A thermal zone at 90 °C over a max of 80: throttled by heat; at 77 °C still throttled
    (within 5 °C); with the zone unreadable for a while, still throttled (a sensor that fails
    is not a machine that cooled); at 70 °C the full quota is back and the log has
    HostThrottled (heat) then HostShareRestored, nothing in between."""
    m = await machine(pool, docker_engines[0], "hot", max_temperature_c=80)
    m.temperature(50)
    await running(m, "warm")

    m.temperature(90)
    await m.until("throttled by heat", lambda: m.cpu_limit("warm") == THROTTLED)
    await m.until_recorded("throttled", "heat")
    m.temperature(77)
    await asyncio.sleep(1)  # several samples at 77 °C
    assert m.cpu_limit("warm") == THROTTLED
    m.sensor_fails()
    await asyncio.sleep(1)  # several samples that cannot be read
    assert m.cpu_limit("warm") == THROTTLED
    assert (await m.policy())[:2] == ("throttled", "heat")
    m.temperature(70)
    await m.until("the full quota back", lambda: m.cpu_limit("warm") == FULL)
    await m.until_recorded("normal", None)
    assert await m.events() == ["HostThrottled", "HostShareRestored"]


# hostd restarts midway: its allocation must not be given up while it is away.
@pytest.mark.liveness(0.5, 20, 120)
@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_a_window_holds_the_pool_and_new_containers_get_it_too(
    pool: Pool, docker_engines: list[DockerEngine], action: str
) -> None:
    """A window over every day, 00:00-24:00: a container placed while it holds starts
    throttled or frozen (the current state applied to new containers). Without the window
    (hostd restarted with a new config) it gets its full share back and thaws."""
    window = {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "action": action}
    m = await machine(pool, docker_engines[0], f"window-{action}", windows=[window])
    state = "throttled" if action == "throttle" else "frozen"
    await m.until_recorded(state, "window")
    await running(m, "office")
    if action == "throttle":
        await m.until("throttled by the window", lambda: m.cpu_limit("office") == THROTTLED)
    else:
        await m.until("frozen by the window", lambda: m.frozen("office"))
    _, _, reason = await m.policy()
    assert "00:00-24:00" in reason

    assert m.host.process is not None
    m.host.process.stop()
    m.pool.write_config(m.host, m.engine, policy=m.pool.quiet_policy(m.host, **FAST))
    m.pool.start_hostd(m.host)
    await m.until("full quota, thawed", lambda: m.full_and_running("office"))
    await m.until_recorded("normal", None)


@pytest.mark.solo  # the owner's load is every process outside the pool's: the other worker's too
@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_the_owners_own_load_throttles_or_freezes_until_idle(
    pool: Pool, docker_engines: list[DockerEngine], action: str
) -> None:
    """CPU-bound processes outside the containers (the owner), one per core, above
    owner_busy_cpus 1.5 (high, so that the other work on a test machine does not count as a
    busy owner): throttled or frozen, cause owner, the reason naming the owner's CPUs. Killed:
    after resume_after_idle_s of idle the container has its full quota back and runs."""
    m = await machine(pool, docker_engines[0], f"owner-{action}", on_owner_busy=action, owner_busy_cpus=1.5)
    await running(m, "guest")
    await m.until("the owner idle first", lambda: m.full_and_running("guest"))
    burners = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
        for _ in range(max(2, os.cpu_count() or 2))
    ]
    try:
        if action == "throttle":
            await m.until("throttled by the owner", lambda: m.cpu_limit("guest") == THROTTLED)
        else:
            await m.until("frozen by the owner", lambda: m.frozen("guest"))
        await m.until_recorded("throttled" if action == "throttle" else "frozen", "owner")
        _, _, reason = await m.policy()
        assert "the owner uses" in reason
    finally:
        for burner in burners:
            burner.kill()  # by its own PID: the owner's processes this test started
            await burner.wait()
    await m.until("the share back after the owner went idle",
                  lambda: m.full_and_running("guest"), timeout=120)  # fmt: skip
    await m.until_recorded("normal", None)


@pytest.mark.solo  # a second-by-second measure of a burner's CPU: the machine to itself
async def test_the_caps_hold_every_second_for_a_minute_across_throttle_and_resume(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """A burner container asks for all of a 1-CPU, 256 MiB donation. Every second for 60 s the
    test reads its cgroup: CPU time used over the second never exceeds the donated CPU (nor,
    while throttled by the battery from 20 s to 40 s, the 0.25 CPUs share), plus a sampling
    tolerance, and memory never exceeds the donated memory."""
    donation = {"cpus": 1, "memory": "256M", "disk": "1G"}
    m = await machine(pool, docker_engines[0], "capped", donate=donation, on_battery="throttle")
    m.on_battery(False)
    burner = ["sh", "-c", "while :; do :; done"]
    await running(m, "burn", memory=256 << 20, command=burner)
    candidates = (m.cgroup("burn", "cpuacct") / "cpuacct.usage", m.cgroup("burn", "cpu") / "cpu.stat")
    cpu_file = next(f for f in candidates if f.exists())
    memory_folder = m.cgroup("burn", "memory")
    memory_file = next(
        f for f in (memory_folder / "memory.usage_in_bytes", memory_folder / "memory.current") if f.exists()
    )

    def used_ns() -> int:
        text = cpu_file.read_text()
        if cpu_file.name == "cpuacct.usage":
            return int(text)
        usec = next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec"))
        return int(usec) * 1000

    tolerance = 0.1
    samples: list[tuple[int, float, int, float | None]] = []  # (second, cpus used, memory, quota)
    start = time.monotonic()
    last_ns, last_at = used_ns(), start
    for second in range(1, 61):
        if second == 20:
            m.on_battery(True)
        if second == 40:
            m.on_battery(False)
        await asyncio.sleep(start + second - time.monotonic())
        quota_before = m.cpu_limit("burn")
        now_ns, now_at = used_ns(), time.monotonic()
        used = (now_ns - last_ns) / 1e9 / (now_at - last_at)
        samples.append((second, used, int(memory_file.read_text()), quota_before))
        last_ns, last_at = now_ns, now_at

    for at, cpus, memory, _ in samples:
        assert cpus <= 1.0 + tolerance, (at, cpus, samples)
        assert memory <= 256 << 20, (at, memory)
    # Seconds whose interval lay wholly within the throttle: the quota read at both ends.
    throttled = [s for s, prev in zip(samples[1:], samples, strict=False) if s[3] == prev[3] == 0.25]
    assert throttled, f"never throttled: {samples}\n{m.pool.logs()}"
    for at, cpus, _, _ in throttled:
        assert cpus <= 0.25 + tolerance, (at, cpus)
    assert samples[-1][3] == 1.0, "the full quota came back"
    assert await m.events() == ["HostThrottled", "HostShareRestored"]


@dataclass(frozen=True)
class Seen:
    """The container as the engine showed it at one moment of a restart of hostd."""

    paused: bool
    nano_cpus: int
    running: bool


class Watch:
    """Reads one container's pause and CPU quota from the engine every 20 ms, in a thread of its
    own (so that nothing the test awaits delays a read), until stopped; an engine that does not
    answer (stopped by the test) shows nothing meanwhile."""

    def __init__(self, engine: DockerEngine, container_id: str) -> None:
        self.engine = engine
        self.container_id = container_id
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="watch-container", daemon=True)

    def _read(self) -> None:
        with DockerDriver(self.engine.url) as driver:
            while not self._stop.is_set():
                try:
                    attrs = driver.inspect(self.container_id)
                except EngineUnavailable:
                    self._stop.wait(0.02)
                    continue
                state = attrs["State"]
                self.seen.append(
                    Seen(bool(state["Paused"]), int(attrs["HostConfig"]["NanoCpus"]), bool(state["Running"]))
                )
                self._stop.wait(0.02)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


async def killed_and_started_again(
    m: Machine, alloc_id: str, *, between: Callable[[], None] = lambda: None
) -> list[Seen]:
    """hostd killed (SIGKILL, as a crash), `between` done while it is away, and started again;
    the container as the engine showed it every 20 ms from before the kill until a second after
    the new hostd's first decision of the owner policy: its first policy-status.json (written
    after each sample's decision, and by a new hostd with a new `since`), which it writes after
    adopting the container (its log says so, else nothing was tried)."""
    assert m.host.process is not None
    container_id = str(m.inspect(alloc_id)["Id"])
    log_path = m.host.process.log_path
    status_file = m.pool.hostd_state_dir(m.host) / "policy-status.json"

    def since() -> str | None:
        try:
            return str(json.loads(status_file.read_text())["policy"]["since"])
        except (OSError, ValueError, KeyError):
            return None  # not written yet, or caught mid-replace

    with Watch(m.engine, container_id) as watch:
        await asyncio.sleep(0.2)  # a few reads before the kill
        m.host.process.kill()
        before, from_offset = since(), log_path.stat().st_size
        assert before is not None
        between()
        m.pool.start_hostd(m.host)
        await m.until("the new hostd's first decision", lambda: since() not in (None, before))
        await asyncio.sleep(1)  # reads after it too: nothing undoes it
    assert "hostd.adopted" in log_path.read_bytes()[from_offset:].decode(errors="replace")
    assert len(watch.seen) > 20, watch.seen
    return watch.seen


@pytest.mark.liveness(0.5, 20, 120)  # hostd away for a moment: its allocation is not given up
@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_a_restarted_hostd_never_thaws_or_unthrottles_what_the_policy_still_holds(
    pool: Pool, docker_engines: list[DockerEngine], action: str
) -> None:
    """What is tried: on battery, the container is throttled (0.5 CPUs) or frozen; hostd is
    killed with SIGKILL and started again, the battery still discharging, while a thread reads
    the container's State.Paused and HostConfig.NanoCpus from the engine every 20 ms, from
    before the kill until a second after the new hostd's first decision.
    What must hold: no read shows it thawed, or throttled to anything but 0.5 CPUs (before,
    the new hostd's reconciliation thawed it, or gave it its full quota, until its policy
    froze or throttled it again); the registry still records it so."""
    m = await machine(pool, docker_engines[0], f"restart-{action}", on_battery=action)
    m.on_battery(True)
    await running(m, "held")
    state = "throttled" if action == "throttle" else "frozen"
    await m.until_recorded(state, "battery")
    if action == "throttle":
        await m.until("throttled to 0.5 CPUs", lambda: m.cpu_limit("held") == THROTTLED)
    else:
        await m.until("frozen", lambda: m.frozen("held"))

    seen = await killed_and_started_again(m, "held")

    if action == "throttle":
        assert {s.nano_cpus for s in seen} == {int(THROTTLED * 1e9)}, seen
        assert not any(s.paused for s in seen), seen
    else:
        assert all(s.paused for s in seen), seen
    await m.until_recorded(state, "battery")


@pytest.mark.liveness(0.5, 20, 120)
@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_a_restarted_hostd_gives_the_share_back_when_the_policy_let_go_meanwhile(
    pool: Pool, docker_engines: list[DockerEngine], action: str
) -> None:
    """What is tried: throttled or frozen on battery; hostd killed (SIGKILL); the machine
    plugged in while it is away; hostd started again.
    What must hold: the new hostd's first decision, normal (what a new hostd assumes of its
    containers), is applied all the same: the container gets its full quota back and is thawed,
    in the cgroup and as the engine says, and the registry records the share restored."""
    m = await machine(pool, docker_engines[0], f"let-go-{action}", on_battery=action)
    m.on_battery(True)
    await running(m, "let-go")
    await m.until_recorded("throttled" if action == "throttle" else "frozen", "battery")

    await killed_and_started_again(m, "let-go", between=lambda: m.on_battery(False))

    await m.until("full quota, thawed", lambda: m.full_and_running("let-go"))
    await m.until_recorded("normal", None)


@pytest.mark.liveness(0.5, 20, 120)
async def test_a_restarted_hostd_keeps_a_hot_machine_throttled_until_it_cools(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: throttled by heat at 90 °C (max 80), then at 77 °C (within the 5 °C
    the machine must cool, so still throttled); hostd killed (SIGKILL) and started again at
    77 °C, the container read every 20 ms across the restart; then 70 °C.
    What must hold: the new hostd remembers the machine was hot: no read shows the container's
    quota other than 0.5 CPUs (before, the new hostd saw 77 °C as not hot and gave the full
    quota back); at 70 °C the full quota comes back."""
    m = await machine(pool, docker_engines[0], "hot-restart", max_temperature_c=80)
    m.temperature(50)
    await running(m, "warm")
    m.temperature(90)
    await m.until("throttled by heat", lambda: m.cpu_limit("warm") == THROTTLED)
    m.temperature(77)
    await asyncio.sleep(1)  # several samples at 77 °C
    assert m.cpu_limit("warm") == THROTTLED

    seen = await killed_and_started_again(m, "warm")

    assert {s.nano_cpus for s in seen} == {int(THROTTLED * 1e9)}, seen
    assert (await m.policy())[:2] == ("throttled", "heat")
    m.temperature(70)
    await m.until("the full quota back", lambda: m.cpu_limit("warm") == FULL)
    await m.until_recorded("normal", None)


def test_a_policy_that_makes_no_sense_stops_hostd_naming_the_field(tmp_path: Path) -> None:
    """`potluck hostd` with a window whose `from` is after its `to`, or an unknown action:
    exit 2, and the message names the field."""
    config = tmp_path / "hostd.toml"
    base = (
        'host_id = "h-1"\ncredentials_file = "h.creds"\nstate_dir = "s"\n'
        '[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n'
    )
    cases = {
        '[[policy.windows]]\ndays = ["mon"]\nfrom = "18:00"\nto = "09:00"\n': "policy.windows.0.from",
        '[policy]\non_owner_busy = "panic"\n': "policy.on_owner_busy",
        "[policy]\nthrottle_to = -0.5\n": "policy.throttle_to",
        '[[policy.windows]]\ndays = ["someday"]\nfrom = "09:00"\nto = "18:00"\n': "policy.windows.0.days.0",
    }
    for policy, field in cases.items():
        config.write_text(base + policy)
        done = hostd_started_with(config)
        assert done.returncode == 2, (policy, done.stderr)
        assert field in done.stderr, (policy, done.stderr)
