"""The owner policy across a restart of the member's Docker engine, with hostd restarted too or
running on: what the policy holds (frozen, throttled) is never started, thawed or unthrottled.

A real pool, hostd on an engine of the test's own (stopped and started as `systemctl stop
docker` would), an interactive allocation (which hostd starts again after the engine stopped
it), the battery from a sysfs-shaped folder (tests/e2e/test_owner_policy.py's Machine). A
thread reads the container's State.Running, State.Paused and HostConfig.NanoCpus from the
engine every 20 ms throughout.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import build_test_image
from tests.e2e.conftest import member, wait_for_status
from tests.e2e.test_owner_policy import FULL, THROTTLED, Machine, Seen, Watch, machine
from tests.fixtures.pool import Pool, place, spec

pytestmark = pytest.mark.liveness(0.5, 20, 120)  # hostd away for a moment: its work is not given up


@pytest.fixture
async def own_engine(tmp_path: Path) -> AsyncIterator[DockerEngine]:
    engine = DockerEngine(tmp_path / "laptop-engine")
    await asyncio.to_thread(engine.start)
    try:
        await asyncio.to_thread(build_test_image, engine.url)
        yield engine
    finally:
        await asyncio.to_thread(engine.stop)


async def held_on_battery(pool: Pool, engine: DockerEngine, name: str, action: str) -> Machine:
    """A laptop on battery whose policy throttles or freezes the pool (the owner's load not
    looked at), holding an interactive allocation `held` so."""
    m = await machine(pool, engine, name, on_battery=action, on_owner_busy="ignore")
    m.on_battery(True)
    await place(pool.store, m.host.host_id, "held", spec(cpus=FULL).model_copy(update={"command": None}))
    await wait_for_status(pool, "held", "running")
    if action == "throttle":
        await m.until_recorded("throttled", "battery")
        await m.until("throttled to 0.5 CPUs", lambda: m.cpu_limit("held") == THROTTLED)
    else:
        await m.until_recorded("frozen", "battery")
        await m.until("frozen", lambda: m.frozen("held"))
    return m


def status_since(m: Machine) -> str | None:
    """The `since` of the policy in hostd's status file (None: none yet, or caught mid-replace)."""
    path = m.pool.hostd_state_dir(m.host) / "policy-status.json"
    try:
        return str(json.loads(path.read_text())["policy"]["since"])
    except (OSError, ValueError, KeyError):
        return None


def log_since(m: Machine, offset: int) -> str:
    assert m.host.process is not None
    return m.host.process.log_path.read_bytes()[offset:].decode(errors="replace")


async def waits_for_its_engine(m: Machine, offset: int) -> None:
    await m.until("hostd waits for its engine", lambda: "hostd.engine_unavailable" in log_since(m, offset))


def held_as_it_was(seen: list[Seen], action: str) -> None:
    """No read shows the container above its throttled share (throttled), or, from its stop by
    the engine on, running unpaused (frozen). Before its stop: the engine itself unpauses a
    paused container to stop it as it shuts down (a read or so), which is no thaw of hostd's."""
    stopped = next((i for i, s in enumerate(seen) if not s.running), None)
    assert stopped is not None, f"the engine never showed it stopped: {shown(seen)}"
    if action == "throttle":
        assert max(s.nano_cpus for s in seen) == int(THROTTLED * 1e9), shown(seen)
    else:
        assert not [s for s in seen[stopped:] if s.running and not s.paused], shown(seen)


def runs(m: Machine) -> bool:
    return bool(m.inspect("held")["State"]["Running"])


def shown(seen: list[Seen]) -> str:
    """The reads in order, each run of alike ones once with its count: R running, P paused,
    S stopped, with the quota in CPUs."""
    runs_of: list[tuple[str, int]] = []
    for s in seen:
        what = f"{'P' if s.paused else 'R' if s.running else 'S'}{s.nano_cpus / 1e9:g}"
        if runs_of and runs_of[-1][0] == what:
            runs_of[-1] = (what, runs_of[-1][1] + 1)
        else:
            runs_of.append((what, 1))
    return " ".join(f"{what}x{n}" for what, n in runs_of)


async def plugged_in_it_runs_in_full(m: Machine) -> None:
    """Plugged in: the container (started again if it was held stopped) runs thawed on its full
    quota, and its allocation is running still: being held stopped ended nothing."""
    m.on_battery(False)
    await m.until("running thawed on the full quota", lambda: runs(m) and m.full_and_running("held"))
    await m.until_recorded("normal", None)
    await wait_for_status(m.pool, "held", "running")


@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_hostd_restarted_while_the_engine_is_away_starts_nothing_its_policy_held(
    pool: Pool, own_engine: DockerEngine, action: str
) -> None:
    """What is tried: on battery, the interactive allocation's container frozen or throttled to
    0.5 CPUs; hostd killed (SIGKILL), the engine stopped (its containers stop), hostd started
    again with no engine to answer, then the engine started; the battery discharging throughout.
    What must hold: from before the kill until a second after the new hostd's first decision no
    read shows the container running unpaused (frozen: the new hostd starts it again only when
    the pool thaws; before, it started it and ran it ~3 s until its first decision froze it) or
    with a quota above 0.5 CPUs (throttled); plugged in, it runs thawed on its full quota and
    its allocation is still running."""
    m = await held_on_battery(pool, own_engine, f"away-{action}", action)
    assert m.host.process is not None
    container_id = str(m.inspect("held")["Id"])
    before = status_since(m)
    assert before is not None

    with Watch(own_engine, container_id) as watch:
        await asyncio.sleep(0.2)  # a few reads before the kill
        m.host.process.kill()
        await asyncio.to_thread(own_engine.stop)
        offset = m.host.process.log_path.stat().st_size
        m.pool.start_hostd(m.host)
        await waits_for_its_engine(m, offset)
        await asyncio.to_thread(own_engine.start)
        await m.until("the new hostd's first decision", lambda: status_since(m) not in (None, before))
        await asyncio.sleep(1)  # reads after it too: nothing undoes it

    assert [s for s in watch.seen if s.running], "the container ran before the kill"
    assert len(watch.seen) > 40, watch.seen
    held_as_it_was(watch.seen, action)
    await plugged_in_it_runs_in_full(m)


@pytest.mark.parametrize("action", ["throttle", "freeze"])
async def test_an_engine_restart_under_a_running_hostd_starts_nothing_its_policy_holds(
    pool: Pool, own_engine: DockerEngine, action: str
) -> None:
    """What is tried: on battery, the interactive allocation's container frozen or throttled to
    0.5 CPUs; the engine restarted under the running hostd (its containers stop), the battery
    discharging throughout.
    What must hold: from before the restart until a second after hostd has dealt with the
    stopped container (held stopped, or started again), no read shows it running unpaused
    (frozen: before, hostd started it and paused it some 0.7 s later) or above 0.5 CPUs;
    plugged in, it runs thawed on its full quota and its allocation is still running."""
    m = await held_on_battery(pool, own_engine, f"restart-{action}", action)
    assert m.host.process is not None
    container_id = str(m.inspect("held")["Id"])
    offset = m.host.process.log_path.stat().st_size

    def dealt_with() -> bool:
        said = log_since(m, offset)
        return "hostd.restart_held" in said or "hostd.container_restarted" in said

    with Watch(own_engine, container_id) as watch:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(own_engine.restart)
        await m.until("hostd dealt with the stopped container", dealt_with)
        await asyncio.sleep(1)

    assert len(watch.seen) > 20, watch.seen
    held_as_it_was(watch.seen, action)
    await plugged_in_it_runs_in_full(m)


async def test_host_status_says_hostd_runs_while_its_engine_is_away(
    pool: Pool, own_engine: DockerEngine
) -> None:
    """What is tried: a laptop's hostd runs one policy sample on battery and stops (SIGKILL);
    its engine stopped, hostd is started again, and the member asks `potluck host status`.
    What must hold: under "hostd" the member reads that hostd is running (its PID) and has not
    written its status yet, the status it reads being the hostd before's (before, it said the
    status was stale and asked whether hostd was running); with no status file at all, that
    hostd is running and has not written one yet (before: "hostd has not run here")."""
    m = await machine(pool, own_engine, "status-away", on_battery="freeze", on_owner_busy="ignore")
    m.on_battery(True)
    await m.until_recorded("frozen", "battery")
    assert m.host.process is not None
    m.host.process.kill()
    await asyncio.to_thread(own_engine.stop)
    offset = m.host.process.log_path.stat().st_size
    process = m.pool.start_hostd(m.host)
    await waits_for_its_engine(m, offset)

    shown = json.loads(member(m.host, "status").stdout)["hostd"]
    assert shown["hostd_pid"] == process.pid, shown
    assert "written by the hostd before this one" in shown["stale"], shown
    assert f"hostd is running (pid {process.pid}" in shown["stale"], shown
    assert shown["policy"]["state"] == "frozen", shown

    (m.pool.hostd_state_dir(m.host) / "policy-status.json").unlink()
    shown = json.loads(member(m.host, "status").stdout)["hostd"]
    assert f"hostd is running (pid {process.pid}" in shown["error"], shown
    assert "has not written its status yet" in shown["error"], shown
    assert process.running(), process.log_tail(40)
