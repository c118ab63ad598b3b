"""Faults named and survived: kill -9 hostd, a silent laptop, a restarted registry,
and restarts of the Docker engine and of NATS."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from potluck.contracts.allocation_events import AllocationSpec, alloc_stream
from potluck.events import EventStore
from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import DockerDriver, create_container
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import build_test_image
from tests.e2e.conftest import wait_for_status
from tests.e2e.sandboxes import (
    alloc_event_types,
    assert_file_kept,
    container_of,
    laptop_with_a_sandbox,
    wait_for_events,
    wait_running_again,
)
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec


async def host_event_types(store: EventStore, host_id: str) -> list[str]:
    return [r.type for r in await store.read_stream(f"host-{host_id}")]


def orphan_spec(host_id: str, wanted: AllocationSpec) -> ContainerSpec:
    return ContainerSpec(
        allocation_id="orphan",
        host_id=host_id,
        image=wanted.image,
        cpus=0.1,
        memory_bytes=32 << 20,
        disk_bytes=16 << 20,
        pids_limit=16,
        command=["sleep", "3600"],
    )


async def test_hostd_killed_and_restarted_adopts_its_containers_and_stops_orphans(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """SIGKILL hostd with two containers running and start it again: both are adopted (same
    container ids, no duplicate), and a container no allocation wants is removed."""
    # A restart under load can outlast the fixture's 2 s lost grace; a lost host's
    # work is rightly given up, which is not what this test is about.
    pool.processes["registry"].stop()
    pool.liveness = (0.2, 3, 60.0)
    pool.start_registry()
    await place(pool.store, laptop.host_id, "keep1", spec())
    await place(pool.store, laptop.host_id, "keep2", spec())
    await wait_for_status(pool, "keep1", "running")
    await wait_for_status(pool, "keep2", "running")
    driver = DockerDriver(docker_engines[0].url)
    try:
        before = {c.allocation_id: c.container_id for c in driver.list_managed(laptop.host_id)}
        assert laptop.process is not None
        laptop.process.kill()
        driver.run(orphan_spec(laptop.host_id, spec()))
        pool.start_hostd(laptop)

        deadline = asyncio.get_running_loop().time() + 30
        while True:
            after = {c.allocation_id: c.container_id for c in driver.list_managed(laptop.host_id)}
            if "orphan" not in after:
                break
            assert asyncio.get_running_loop().time() < deadline, pool.logs()
            await asyncio.sleep(0.2)
        assert after == before
        assert all(c.running for c in driver.list_managed(laptop.host_id))
    finally:
        driver.close()
    await wait_for_status(pool, "keep1", "running")


@pytest.mark.liveness(0.25, 8, 4.0)
async def test_a_hostd_restarted_while_the_allocator_is_stopped_beats_and_keeps_its_work(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """What is tried: hostd is killed (-9) with a container running and started again while the
    allocator is stopped (SIGSTOP: an upgrade, a restart), so hostd registers but its first sync
    waits for an answer the allocator cannot give. Before, hostd beat only once that sync was
    done: the registry heard nothing after the registration, declared the machine suspect and
    then lost, and its running work was given up (a full run saw the same with a slow engine).
    What must hold: through more than the suspect and lost graces the machine stays active
    (no HostSuspected or HostLost recorded); once the allocator continues, hostd syncs and the
    container is adopted, still running. (Suspect after 2 s: this asserts that nothing happens
    once hostd is registered; what its restart's own silence led to is not counted.)"""
    await place(pool.store, laptop.host_id, "stall1", spec())
    await wait_for_status(pool, "stall1", "running")
    allocator = pool.processes["allocator"]
    assert allocator.pid is not None
    assert laptop.process is not None
    os.kill(allocator.pid, signal.SIGSTOP)
    try:
        laptop.process.kill()
        hostd = pool.start_hostd(laptop)
        written = len(hostd.log_path.read_text(errors="replace"))  # the killed one's lines

        def said(event: str) -> bool:
            return f'"event": "{event}"' in hostd.log_path.read_text(errors="replace")[written:]

        async with asyncio.timeout(30):
            while not said("hostd.registered"):
                await asyncio.sleep(0.1)
        before = await host_event_types(pool.store, laptop.host_id)  # its registration's among them
        interval, missed, grace = pool.liveness
        await asyncio.sleep(interval * missed + grace + 1.5)
        assert not said("hostd.synced"), "the sync did not wait for the allocator"
        after = (await host_event_types(pool.store, laptop.host_id))[len(before) :]
        assert "HostSuspected" not in after, (after, pool.logs())
        assert "HostLost" not in after, (after, pool.logs())
    finally:
        os.kill(allocator.pid, signal.SIGCONT)
    async with asyncio.timeout(30):
        while not said("hostd.synced"):
            await asyncio.sleep(0.1)
    await wait_for_status(pool, "stall1", "running")
    assert "HostLost" not in (await host_event_types(pool.store, laptop.host_id))[len(before) :]


async def test_a_silent_host_becomes_suspect_then_lost_and_recovers_when_beats_return(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """SIGSTOP the hostd (a closed lid): suspect, then lost after the grace; SIGCONT: recovered."""
    assert laptop.process is not None
    assert laptop.process.pid is not None
    os.kill(laptop.process.pid, signal.SIGSTOP)
    try:
        await pool.wait_for_host(laptop.host_id, "unreachable", timeout=5)
        await pool.wait_for_host(laptop.host_id, "lost", timeout=10)
    finally:
        os.kill(laptop.process.pid, signal.SIGCONT)
    await pool.wait_for_host(laptop.host_id, "active", timeout=10)
    types = await host_event_types(pool.store, laptop.host_id)
    assert types[-3:] == ["HostSuspected", "HostLost", "HostRecovered"]


@pytest.mark.liveness(0.25, 8, 4.0)
async def test_a_restarted_registry_does_not_declare_hosts_lost(pool: Pool, laptop: EnrolledHost) -> None:
    """The registry is down for longer than the lost grace period; at restart every host gets
    a fresh grace period and, beating, stays online: no transition is logged. (Suspect after
    2 s rather than 0.6 s: this asserts that nothing happens, and a CI machine starting the
    registry anew can starve the hostd's beats for more than half a second.)"""
    pool.processes["registry"].kill()
    await asyncio.sleep(pool.liveness[2] * 1.5)
    pool.start_registry()
    await asyncio.sleep(pool.liveness[2] * 1.5)
    live = await pool.live_hosts()
    assert [h["status"] for h in live["hosts"]] == ["active"]
    assert "HostLost" not in await host_event_types(pool.store, laptop.host_id)
    assert "HostSuspected" not in await host_event_types(pool.store, laptop.host_id)


async def test_hostd_survives_its_docker_engine_restarting(pool: Pool, tmp_path: os.PathLike[str]) -> None:
    """The engine restarts under hostd (as on a member's reboot). What must hold: the task's
    container died with it and is reported as exited, saying it was stopped on its host (the
    engine's shutdown sent it the stop, which hostd saw); the interactive allocation (no command)
    is still running, in the same container, started again with the file written into it
    before; the engine's return is noticed and new work runs again."""
    async with laptop_with_a_sandbox(pool, Path(tmp_path), "flaky", "before") as (
        engine,
        driver,
        host,
        sandbox,
    ):
        await asyncio.to_thread(engine.restart)
        await wait_for_status(pool, "before", "exited", timeout=60)
        before = await allocation(pool.store, "before")
        assert before is not None
        assert before.reason == "stopped on its host (by its member, or its Docker engine stopped)", before
        await place(pool.store, host.host_id, "after", spec())
        await wait_for_status(pool, "after", "running", timeout=60)
        assert "hostd.engine" in (host.process.log_tail(200) if host.process else "")

        process = host.process
        await wait_running_again(driver, sandbox, logs=lambda: process.log_tail(100) if process else "")
        assert await container_of(pool, "sandbox") == sandbox
        await assert_file_kept(driver, sandbox)
        # Its history says why its processes are gone (a 143 from the engine's SIGTERM, or a
        # 137 from its SIGKILL when the shutdown outlasts its grace).
        await wait_for_events(pool, "sandbox", "AllocationRestarted", 1)
        assert "AllocationExited" not in await alloc_event_types(pool.store, "sandbox")


async def test_hostd_carries_on_after_nats_restarts(pool: Pool, laptop: EnrolledHost) -> None:
    """NATS restarts: hostd reconnects, re-registers, resyncs; a placement made after it runs."""
    await place(pool.store, laptop.host_id, "pre", spec())
    await wait_for_status(pool, "pre", "running")
    await asyncio.to_thread(pool.nats.restart)
    await place(pool.store, laptop.host_id, "post", spec())
    await wait_for_status(pool, "post", "running", timeout=60)
    await pool.wait_for_host(laptop.host_id, "active")


async def containers_of(driver: DockerDriver, host_id: str, alloc_id: str) -> list[str]:
    found = await asyncio.to_thread(driver.list_managed, host_id)
    return [c.container_id for c in found if c.allocation_id == alloc_id]


async def wait_removed(
    pool: Pool, driver: DockerDriver, host_id: str, alloc_id: str, timeout: float = 20
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await containers_of(driver, host_id, alloc_id):
        assert asyncio.get_running_loop().time() < deadline, (
            f"the container of {alloc_id} is still on the engine after {timeout}s\n{pool.logs()}"
        )
        await asyncio.sleep(0.2)


@pytest.mark.liveness(0.5, 6, 60.0)
async def test_ended_containers_leave_the_disk_and_one_never_started_is_a_failure(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """On one host, each way a container ends, then the container gone from the engine
    (its writable layer with it) once the end is logged, the exit code still on record:
    - it exits by itself with code 3: exited, code 3;
    - it writes past its disk bound (no engine quota here): failed, disk_limit_exceeded;
    - hostd is SIGKILLed between create and start (the window made deterministic by creating
      the container as hostd would, labels and all, while hostd is down), then restarted:
      the allocation fails with start_failed saying it never started, not exited with code 0.
    (Lost only after 60 s: the restart is not about a lost host.)"""
    import docker

    from potluck.hostd.container_config import create_kwargs
    from potluck.hostd.containers import container_spec
    from tests.fixtures.pool import allocation

    driver = DockerDriver(docker_engines[0].url)
    try:
        await place(pool.store, laptop.host_id, "done", spec(command=["sh", "-c", "sleep 1; exit 3"]))
        await wait_for_status(pool, "done", "exited")
        await wait_removed(pool, driver, laptop.host_id, "done")
        done = await allocation(pool.store, "done")
        assert done is not None
        assert done.exit_code == 3

        writer = spec(
            disk=16 << 20, command=["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=48; sleep 3600"]
        )
        await place(pool.store, laptop.host_id, "writer", writer)
        await wait_for_status(pool, "writer", "failed")
        await wait_removed(pool, driver, laptop.host_id, "writer")
        written = await allocation(pool.store, "writer")
        assert written is not None
        assert written.reason == "disk_limit_exceeded"

        assert laptop.process is not None
        laptop.process.kill()
        await place(pool.store, laptop.host_id, "never", spec())
        quota = (await asyncio.to_thread(driver.engine_facts)).disk_quota_supported
        kwargs = create_kwargs(container_spec(laptop.host_id, "never", spec()), disk_quota=quota)
        client = docker.DockerClient(base_url=docker_engines[0].url)
        try:
            created = await asyncio.to_thread(create_container, client, kwargs)
        finally:
            client.close()
        assert (await asyncio.to_thread(driver.state, created.id or "")).status == "created"
        pool.start_hostd(laptop)

        await wait_for_status(pool, "never", "failed", timeout=60)
        records = await pool.store.read_stream(alloc_stream("never"))
        assert [r.type for r in records][-1] == "AllocationFailed"
        assert records[-1].data["reason"] == "start_failed"
        assert "never started" in records[-1].data["detail"]
        await wait_removed(pool, driver, laptop.host_id, "never")
    finally:
        driver.close()


async def test_hostd_outlives_its_docker_engine_stopping_and_recovers(
    pool: Pool, tmp_path: os.PathLike[str]
) -> None:
    """The host's engine (one with no image yet, so hostd cannot cache what it learnt of it)
    is stopped by its PID while hostd runs: hostd stays up past several disk checks and
    reports the engine unavailable; an allocation is placed on it meanwhile; the engine starts
    again: hostd reports it available, starts what was placed during the outage (whichever of
    hostd's calls finds the engine back first), and runs new work."""
    import json

    from nats.aio.msg import Msg

    from potluck.contracts.subjects import REPORT_PREFIX

    engine = DockerEngine(Path(tmp_path) / "own-engine")
    engine.start()
    # hostd reaches the engine through a link of its own, which goes with the engine and comes
    # back only once the restarted engine has its image again: importing it takes seconds under
    # load, and an engine seen without it sends the placement to a pull that cannot work here.
    link_dir = Path(tempfile.mkdtemp(prefix="pl-lnk-"))  # short: a socket path has 108 bytes
    link = link_dir / "docker.sock"
    link.symlink_to(engine.socket_path)
    nc = await pool.client()
    try:
        host = await pool.enroll("outage")
        engine_reports: asyncio.Queue[dict[str, object]] = asyncio.Queue()

        async def on_engine_report(msg: Msg) -> None:
            engine_reports.put_nowait(json.loads(msg.data))

        async def engine_reported(available: bool) -> None:
            async with asyncio.timeout(20):
                while (await engine_reports.get())["available"] is not available:
                    pass

        await nc.subscribe(f"{REPORT_PREFIX}.{host.host_id}.engine", cb=on_engine_report)
        pool.write_config(host, f"unix://{link}")
        pool.start_hostd(host)
        await pool.wait_for_host(host.host_id, "active")
        assert host.process is not None

        await asyncio.to_thread(engine.stop)  # SIGTERM to dockerd's own PID
        link.unlink()
        await engine_reported(False)
        await place(pool.store, host.host_id, "during-outage", spec())
        await asyncio.sleep(3)  # six disk checks against an engine that is away
        assert host.process.running(), f"hostd exited\n{host.process.log_tail(60)}"

        await asyncio.to_thread(engine.start)
        await asyncio.to_thread(build_test_image, engine.url)
        link.symlink_to(engine.socket_path)
        await engine_reported(True)
        await wait_for_status(pool, "during-outage", "running", timeout=60)
        await place(pool.store, host.host_id, "after-outage", spec())
        await wait_for_status(pool, "after-outage", "running", timeout=60)
        assert host.process.running()
    finally:
        await nc.close()
        engine.stop()
        shutil.rmtree(link_dir, ignore_errors=True)


#: hostd as `potluck hostd --config FILE` runs it, with a bug put in its agent's work.
HOSTD_WITH_A_BUG = """
import sys
from potluck.cli import main
from potluck.hostd.agent import Agent

async def run(self):
    raise RuntimeError("a bug put here by the test")

Agent.run = run
main(["--log-level", "INFO", "hostd", "--config", sys.argv[1]])
"""


async def test_a_crashing_hostd_says_so_in_one_json_line_and_exits_1(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: hostd's work raises an exception nothing expects (a bug, here put in by the test:
    no real one can be asked for). Must hold: it exits with code 1 and every line it printed
    is JSON, one of them `hostd.crashed` naming the error, its traceback in `exception`, and
    a hint (before, hostd ended in Python's bare traceback, the only service to)."""
    config = pool.write_config(await pool.enroll("laptop-a"), docker_engines[0])
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", HOSTD_WITH_A_BUG, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    [crashed] = [line for line in lines if line["event"] == "hostd.crashed"]
    assert crashed["level"] == "error"
    assert crashed["error"] == "RuntimeError: a bug put here by the test"
    assert crashed["exception"].startswith("Traceback")
    assert "supervisor" in crashed["hint"]
