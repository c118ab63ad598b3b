"""Sleep is its own state, not death (issue 15): a laptop that closes its lid keeps its work.

- logind announces the sleep over a real (private) D-Bus: the registry shows the host
  asleep within a second, never unreachable while it sleeps, and active when it wakes;
- a lid closed without warning (hostd SIGSTOPped, its containers `docker pause`d) for
  longer than the suspect time: unreachable, its allocations never failed, and the same
  processes run on when it opens;
- closed past the stranded grace: the allocations are lost, and the returning host stops
  their containers.
"""

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from potluck.contracts.allocation_events import alloc_stream
from potluck.contracts.host_events import host_stream
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import wait_for_status
from tests.fixtures.logind import DbusDaemon, LogindStandIn
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec

#: A process that counts, five times a second, into a file: frozen, it stops; thawed, it goes on.
COUNTER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"]


@pytest.fixture
def dbus(tmp_path: Path) -> Iterator[DbusDaemon]:
    daemon = DbusDaemon(tmp_path / "dbus")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
async def logind(dbus: DbusDaemon) -> AsyncIterator[LogindStandIn]:
    stand_in = LogindStandIn(dbus.address)
    await stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.close()


async def host_events(pool: Pool, host_id: str) -> list[str]:
    return [r.type for r in await pool.store.read_stream(host_stream(host_id))]


async def alloc_events(pool: Pool, alloc_id: str) -> list[str]:
    return [r.type for r in await pool.store.read_stream(alloc_stream(alloc_id))]


async def live_status(pool: Pool, host_id: str) -> str:
    """The host's status as the running registry answers it now."""
    hosts = (await pool.live_hosts())["hosts"]
    [row] = [h for h in hosts if h["host_id"] == host_id]
    return str(row["status"])


async def wait_live_status(pool: Pool, host_id: str, status: str, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (seen := await live_status(pool, host_id)) != status:
        assert asyncio.get_running_loop().time() < deadline, (
            f"the registry has {host_id} {seen}, not {status}, {within}s on\n{pool.logs()}"
        )
        await asyncio.sleep(0.05)


def container_pid(engine: DockerEngine, alloc_id: str) -> tuple[str, int]:
    client = docker.DockerClient(base_url=engine.url)
    try:
        container = client.containers.get(f"potluck-{alloc_id}")
        return str(container.id), int(container.attrs["State"]["Pid"])
    finally:
        client.close()


def count(engine: DockerEngine, alloc_id: str) -> int:
    client = docker.DockerClient(base_url=engine.url)
    try:
        output = client.containers.get(f"potluck-{alloc_id}").exec_run(["cat", "/tmp/count"]).output
        assert isinstance(output, bytes)
        return int(output.decode().strip() or 0)
    finally:
        client.close()


def pause(engine: DockerEngine, alloc_id: str, *, frozen: bool) -> None:
    """Freeze or thaw the allocation's container as the sleeping machine would. Through the
    driver, which tries again when runc fails the freeze ("unable to freeze", 500) on a
    loaded machine, as it did here once: a machine's own sleep never fails that way."""
    driver = DockerDriver(engine.url, helper=None)
    try:
        container_id = f"potluck-{alloc_id}"
        driver.pause(container_id) if frozen else driver.unpause(container_id)
    finally:
        driver.close()


async def counting(engine: DockerEngine, alloc_id: str, above: int, pool: Pool, timeout: float = 15) -> int:
    """Until the counter passes `above`: the same process counting on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (now := await asyncio.to_thread(count, engine, alloc_id)) <= above:
        assert asyncio.get_running_loop().time() < deadline, f"the counter stayed at {now}\n{pool.logs()}"
        await asyncio.sleep(0.2)
    return now


def close_lid(laptop: EnrolledHost, engine: DockerEngine, alloc_id: str) -> None:
    assert laptop.process is not None
    assert laptop.process.pid is not None
    os.kill(laptop.process.pid, signal.SIGSTOP)
    pause(engine, alloc_id, frozen=True)


def open_lid(laptop: EnrolledHost, engine: DockerEngine, alloc_id: str) -> None:
    assert laptop.process is not None
    assert laptop.process.pid is not None
    # The container first: a thawed hostd may find it paused and unpause it itself.
    pause(engine, alloc_id, frozen=False)
    os.kill(laptop.process.pid, signal.SIGCONT)


@pytest.mark.liveness(0.25, 8, 60.0)
async def test_sleep_announced_over_dbus_is_asleep_at_once_and_never_unreachable(
    pool: Pool, docker_engines: list[DockerEngine], dbus: DbusDaemon, logind: LogindStandIn
) -> None:
    """A stand-in logind on a real dbus-daemon emits PrepareForSleep(true): within a second the
    registry lists the host asleep, and hostd has released its delay lock. Silent past the
    suspect time (2 s) it stays asleep, not unreachable, its allocation running. On
    PrepareForSleep(false) it is active again, the log has HostSleeping then HostWoke (slept
    at least the time it was asleep), hostd holds a new delay lock, and the allocation was
    never lost or failed."""
    host = await pool.enroll("lid")
    pool.write_config(host, docker_engines[0], sleep={"dbus_address": dbus.address})
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    deadline = asyncio.get_running_loop().time() + 15
    while not logind.locks:  # hostd listens once it holds logind's delay lock
        assert asyncio.get_running_loop().time() < deadline, f"hostd took no delay lock\n{pool.logs()}"
        await asyncio.sleep(0.05)
    assert logind.locks[0][1:] == ("potluck-hostd", "delay")
    await place(pool.store, host.host_id, "nap", spec())
    await wait_for_status(pool, "nap", "running")

    await logind.prepare_for_sleep(True)
    await wait_live_status(pool, host.host_id, "asleep", within=1.0)
    # Released once the registry's answer is back at hostd (the lock is held at most ~1 s).
    deadline = asyncio.get_running_loop().time() + 5
    while logind.held(0):
        assert asyncio.get_running_loop().time() < deadline, "hostd kept logind's delay lock after announcing"
        await asyncio.sleep(0.05)

    await asyncio.sleep(3)  # past the suspect time: an announced sleep is not silence
    assert await live_status(pool, host.host_id) == "asleep"
    assert "HostSuspected" not in await host_events(pool, host.host_id)

    await logind.prepare_for_sleep(False)
    await wait_live_status(pool, host.host_id, "active", within=15)
    types = await host_events(pool, host.host_id)
    assert types[types.index("HostSleeping") :][:2] == ["HostSleeping", "HostWoke"], types
    woke = [r for r in await pool.store.read_stream(host_stream(host.host_id)) if r.type == "HostWoke"]
    assert woke[-1].data["slept_s"] >= 3
    assert len(logind.locks) == 2, "hostd took no new delay lock on waking"
    assert logind.held(1), "hostd let go of its new delay lock"
    state = await allocation(pool.store, "nap")
    assert state is not None
    assert state.status == "running"
    assert not {"AllocationLost", "AllocationFailed"} & set(await alloc_events(pool, "nap"))


@pytest.mark.liveness(0.2, 3, 30.0)
async def test_a_lid_closed_past_the_suspect_time_keeps_its_work_and_its_processes(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """hostd SIGSTOPped and the container `docker pause`d (a closed lid, no warning) for longer
    than the suspect time (0.6 s) and shorter than the stranded grace (30 s): the host shows
    unreachable, the allocation stays running throughout; SIGCONT and unpause: the host is
    active again, the allocation was never lost or failed, and the container's process is
    the same one (same PID) counting on from where it stopped."""
    engine = docker_engines[0]
    await place(pool.store, laptop.host_id, "lid", spec(command=COUNTER))
    await wait_for_status(pool, "lid", "running")
    before = await counting(engine, "lid", 0, pool)
    container, pid = await asyncio.to_thread(container_pid, engine, "lid")

    close_lid(laptop, engine, "lid")
    try:
        await pool.wait_for_host(laptop.host_id, "unreachable", timeout=10)
        await asyncio.sleep(2)  # well past the suspect time
        state = await allocation(pool.store, "lid")
        assert state is not None
        assert state.status == "running"
        assert (await pool.hosts()).hosts[laptop.host_id].waiting
    finally:
        open_lid(laptop, engine, "lid")

    await pool.wait_for_host(laptop.host_id, "active", timeout=15)
    assert await asyncio.to_thread(container_pid, engine, "lid") == (container, pid)
    await counting(engine, "lid", before, pool)
    state = await allocation(pool.store, "lid")
    assert state is not None
    assert state.status == "running"
    assert not {"AllocationLost", "AllocationFailed"} & set(await alloc_events(pool, "lid"))
    types = await host_events(pool, laptop.host_id)
    assert "HostSuspected" in types
    assert "HostLost" not in types
    recovered = [
        r for r in await pool.store.read_stream(host_stream(laptop.host_id)) if r.type == "HostRecovered"
    ]
    assert recovered[-1].data["was"] == "unreachable"


@pytest.mark.liveness(0.2, 3, 3.0)
async def test_past_the_stranded_grace_the_work_is_lost_and_the_returning_host_stops_it(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """A lid closed past the stranded grace (3 s here): the host is lost and its allocation
    lost with it; when the host comes back (SIGCONT, unpause), it stops and removes the
    stale container (the engine has none of the host's left) and says so in its log."""
    engine = docker_engines[0]
    await place(pool.store, laptop.host_id, "stale", spec(command=COUNTER))
    await wait_for_status(pool, "stale", "running")

    close_lid(laptop, engine, "stale")
    try:
        await pool.wait_for_host(laptop.host_id, "lost", timeout=20)
        await wait_for_status(pool, "stale", "lost", timeout=20)
    finally:
        open_lid(laptop, engine, "stale")

    await pool.wait_for_host(laptop.host_id, "active", timeout=15)
    driver = DockerDriver(engine.url)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while await asyncio.to_thread(driver.list_managed, laptop.host_id):
            assert asyncio.get_running_loop().time() < deadline, f"stale container kept\n{pool.logs()}"
            await asyncio.sleep(0.2)
    finally:
        driver.close()
    assert laptop.process is not None
    assert "hostd.stopping_given_up" in laptop.process.log_tail(400)
