"""Containers created ahead (issue 20, `warm_containers`): a placement of a shape placed here
lately takes one and only starts it; nothing else about the allocation changes.

One pool, two hosts: `warm` on the first engine keeps one container per shape ahead,
`cold` on the second keeps none (today's behaviour).
"""

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.exec_bridge import ExecBridge
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import member, start_gatewayed, wait_for_status
from tests.fixtures.pool import Pool, allocation, place, spec

MiB = 1 << 20


def _warm(client: docker.DockerClient) -> list[Any]:
    """Warm containers not taken: created (or started ahead and paused), named potluck_warm_*."""
    found = client.containers.list(  # hostd takes and removes them meanwhile: ignore_removed
        all=True, filters={"label": "potluck.warm=1", "status": ["created", "paused"]}, ignore_removed=True
    )
    return [c for c in found if (c.name or "").startswith("potluck_warm_")]


def _frozen_of(client: docker.DockerClient, command: list[str] | None) -> list[Any]:
    """Warm containers started ahead and frozen for allocations of `command`."""
    return [c for c in _warm(client) if c.status == "paused" and c.attrs["Config"]["Cmd"] == command]


async def _until(what: str, check: Any, pool: Pool, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s\n{pool.logs(80)}")
        await asyncio.sleep(0.2)


def _processes(client: docker.DockerClient, container_id: str | None) -> list[str]:
    """What runs in the container, by `docker top`, the helper's own named for what it is."""
    named = {
        "/.potluck/busybox sleep 2147": "launcher-wait",  # the engine's ps may cut the line
        "/.potluck/busybox sh -c": "launcher",
        "/sbin/docker-init": "docker-init",
    }
    assert container_id is not None
    top = client.api.top(container_id)
    column = top["Titles"].index("CMD")
    found = []
    for row in top["Processes"]:
        cmd = row[column]
        found.append(next((name for start, name in named.items() if cmd.startswith(start)), cmd))
    return sorted(found)


def _host_config(client: docker.DockerClient, alloc_id: str) -> dict[str, Any]:
    attrs: dict[str, Any] = client.api.inspect_container(f"potluck-{alloc_id}")
    return dict(attrs["HostConfig"])


async def test_warm_containers_are_taken_refilled_and_change_nothing_else(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: on the warm host, a first allocation of a shape (cold, as always), then a second
    one of that shape with other limits; then a new shape (a command that prints and exits 3)
    twice; beside them two allocations with env values. On the cold host, two of one shape.
    Must hold: after the first, one warm container waits; the second runs in exactly that
    container (renamed), with its own limits read back and a HostConfig equal to a cold-started
    twin's; the exec side finds it as the allocation's; the pool is refilled with a new one; a
    warm container of a shape with a command waits frozen in its launcher with nothing of the
    command run (no process, no output) and, once taken, runs the command as docker-init's
    only child, the launcher gone; the exiting shape's warm run prints its output once and
    exits 3, reported as such; an allocation
    with env values is cold as the first of its shape and sees its values, and the next of its
    shape, with other values, takes the warm one made after it and sees its own values (the
    container was made without any), with the same HostConfig; an interactive allocation (no
    command) takes one started ahead and frozen, runs unfrozen and answers an exec; the
    engine's listing gives the taken ones their allocations (what a restarted hostd adopts
    by) and the waiting ones none; the cold host never makes one."""
    warm_engine, cold_engine = docker_engines[0], docker_engines[1]
    warm = await pool.enroll("laptop-warm")
    pool.write_config(warm, warm_engine, warm_containers=1)
    pool.start_hostd(warm)
    cold = await pool.enroll("laptop-cold")
    pool.write_config(cold, cold_engine)
    pool.start_hostd(cold)
    await pool.wait_for_host(warm.host_id, "active")
    await pool.wait_for_host(cold.host_id, "active")
    client = docker.DockerClient(base_url=warm_engine.url)
    cold_client = docker.DockerClient(base_url=cold_engine.url)
    try:
        # The first of its shape creates its own; one of its shape is made ahead after it.
        await place(pool.store, warm.host_id, "first", spec())
        await wait_for_status(pool, "first", "running")
        [ahead] = await _until(
            "a warm container made ahead and frozen",
            lambda: [c for c in _warm(client) if c.status == "paused"],
            pool,
        )
        assert ahead.labels.get("potluck.allocation") == ""  # set, to no allocation
        assert ahead.attrs["Config"]["Env"] == client.images.get(DEFAULT_TAG).attrs["Config"]["Env"]
        # Started ahead and frozen, but what runs is the launcher waiting, not the command.
        assert ahead.status == "paused"
        assert _processes(client, ahead.id) == ["docker-init", "launcher", "launcher-wait"]
        assert ahead.logs() == b""

        # The second of that shape, with other limits, runs in it.
        await place(pool.store, warm.host_id, "second", spec(cpus=0.25, memory=80 * MiB, pids_limit=50))
        await wait_for_status(pool, "second", "running")
        taken = client.containers.get("potluck-second")
        assert taken.id == ahead.id
        # The launcher becomes the command: docker-init and `sleep 3600`, as `docker run` has.
        # Running is logged once the launcher is told to go; on a busy machine its exec of the
        # command may still be under way at that moment (a full run saw `[busybox]`, the launcher).
        await _until(
            "the launcher giving way to the command",
            lambda: _processes(client, taken.id) == ["/bin/sleep 3600", "docker-init"],
            pool,
            timeout=30,
        )
        host = taken.attrs["HostConfig"]
        assert (host["NanoCpus"], host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (
            250_000_000,
            80 * MiB,
            80 * MiB,
            50,
        )
        bridge = ExecBridge(
            warm_engine.url,
            warm.host_id,
            state_dir=pool.workdir / "bridge-state",
            disk_bound_of={"second": 64 * MiB}.get,
        )
        assert await bridge.container_for("second") == taken.id
        disk_left = await bridge.disk_left("second")
        assert disk_left is not None
        assert 0 < disk_left <= 64 * MiB
        # Refilled, off the placement's path: a new warm container of the shape.
        await _until(
            "the warm pool refilled",
            lambda: [c for c in _warm(client) if c.id != ahead.id],
            pool,
        )

        # A twin with env values of its own, the first of its shape, is created cold; apart
        # from names and ids, the engine's HostConfig of the two is the same.
        twin = AllocationSpec(
            resources=Capacity(cpus=0.25, memory_bytes=80 * MiB, disk_bytes=64 * MiB),
            image=DEFAULT_TAG,
            command=["sh", "-c", 'echo "marker=$MARKER"; sleep 3600'],
            env={"MARKER": "twin-env"},
            pids_limit=50,
        )
        await place(pool.store, warm.host_id, "twin", twin)
        await wait_for_status(pool, "twin", "running")
        assert client.containers.get("potluck-twin").labels.get("potluck.allocation") == "twin"
        await _until(
            "the twin's env in its output",
            lambda: b"marker=twin-env" in client.containers.get("potluck-twin").logs(),
            pool,
        )
        assert _host_config(client, "second") == _host_config(client, "twin")

        # The next of the twin's shape, with values of its own, takes the container made ahead
        # after the twin: its values reach the command though the container was made without.
        [twin_ahead] = await _until(
            "a warm container of the twin's shape",
            lambda: [
                c for c in _warm(client) if c.attrs["Config"]["Cmd"] == twin.command and c.status == "paused"
            ],
            pool,
        )
        assert not any(e.startswith("MARKER=") for e in twin_ahead.attrs["Config"]["Env"])
        await place(
            pool.store, warm.host_id, "twin-2", twin.model_copy(update={"env": {"MARKER": "warm 'v' $x"}})
        )
        await wait_for_status(pool, "twin-2", "running")
        assert client.containers.get("potluck-twin-2").id == twin_ahead.id
        await _until(
            "the taker's env in its output",
            lambda: client.containers.get("potluck-twin-2").logs() == b"marker=warm 'v' $x\n",
            pool,
        )
        assert _host_config(client, "twin-2") == _host_config(client, "twin")

        # A new shape: its first run is cold, its second warm; output and exit code hold.
        exits = spec(command=["sh", "-c", "echo hello-from-$HOSTNAME-ok; sleep 2; exit 3"])
        await place(pool.store, warm.host_id, "exits-1", exits)
        await wait_for_status(pool, "exits-1", "exited")
        await _until(
            "a warm container of the exiting shape",
            lambda: [
                c for c in _warm(client) if c.attrs["Config"]["Cmd"] == exits.command and c.status == "paused"
            ],
            pool,
        )
        [waiting] = [c for c in _warm(client) if c.attrs["Config"]["Cmd"] == exits.command]
        assert waiting.logs() == b""  # nothing of the command ran ahead
        await place(pool.store, warm.host_id, "exits-2", exits)
        await wait_for_status(pool, "exits-2", "running")
        ran = client.containers.get("potluck-exits-2")
        assert ran.id == waiting.id
        printed = f"hello-from-{ran.attrs['Config']['Hostname']}-ok\n".encode()
        await _until("the command's output", lambda: ran.logs() == printed, pool)
        await wait_for_status(pool, "exits-2", "exited")
        state = await allocation(pool.store, "exits-2")
        assert state is not None
        assert state.exit_code == 3
        taken_lines = [line for line in pool.logs(400).splitlines() if "hostd.warm_taken" in line]
        assert any("exits-2" in line for line in taken_lines)

        # Interactive (no command: the helper's keep-alive): started ahead and frozen, taken by
        # unfreezing; it runs, answers an exec, and its HostConfig is its cold twin's.
        interactive = AllocationSpec(  # a quarter CPU: with what still runs above, within the 2 donated
            resources=Capacity(cpus=0.25, memory_bytes=64 * MiB, disk_bytes=64 * MiB),
            image=DEFAULT_TAG,
            command=None,
            pids_limit=64,
        )
        await place(pool.store, warm.host_id, "i-1", interactive)
        await wait_for_status(pool, "i-1", "running")
        [frozen] = await _until(
            "an interactive warm container started ahead",
            lambda: [c for c in _warm(client) if c.status == "paused" and c.attrs["Config"]["Cmd"] is None],
            pool,
        )
        await place(pool.store, warm.host_id, "i-2", interactive)
        await wait_for_status(pool, "i-2", "running")
        taken = client.containers.get("potluck-i-2")
        assert taken.id == frozen.id
        assert taken.attrs["State"]["Running"] is True
        assert taken.attrs["State"]["Paused"] is False
        assert taken.exec_run(["/.potluck/busybox", "true"]).exit_code == 0
        assert _host_config(client, "i-2") == _host_config(client, "i-1")
        assert await bridge.container_for("i-2") == taken.id

        # What a restarted hostd reconciles by: the taken containers are their allocations'
        # (by name), a warm one waiting is nobody's.
        with DockerDriver(warm_engine.url) as driver:
            managed = {c.container_id: c.allocation_id for c in driver.list_managed(warm.host_id)}
        assert managed[str(client.containers.get("potluck-second").id)] == "second"
        assert managed[str(taken.id)] == "i-2"
        assert all(managed[str(c.id)] == "" for c in _warm(client))

        # The cold host: as today, no warm container, each allocation its own labels.
        for alloc_id in ("c1", "c2"):
            await place(pool.store, cold.host_id, alloc_id, spec())
            await wait_for_status(pool, alloc_id, "running")
            container = cold_client.containers.get(f"potluck-{alloc_id}")
            assert container.labels["potluck.allocation"] == alloc_id
        left: dict[str, str | list[str] | bool] = {"label": "potluck.warm=1"}
        assert cold_client.containers.list(all=True, filters=left, ignore_removed=True) == []
    finally:
        client.close()
        cold_client.close()


async def test_an_ssh_session_into_a_warm_taken_allocation_sees_its_env_values(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """Tried, through the real gateway, hostd and `ssh`: on a host with `warm_containers = 1`,
    an interactive allocation and a task, each first without values (cold, so that one of its
    shape is made ahead), then again with values (a quote, `$`, spaces), taking the warm one.
    Must hold: the second of each runs in a container made ahead (its engine record holds
    none of the values), and an `ssh` session into it sees the allocation's values, while
    the gateway's own variables (POTLUCK_ALLOC) are the session's."""
    gatewayed = await start_gatewayed(pool, docker_engines[0], tmp_path, warm_containers=1)
    client = docker.DockerClient(base_url=docker_engines[0].url)
    values = {"SECRET": "it's $not expanded", "SPACED": "a  b"}
    show = 'printf "%s|%s|%s" "$SECRET" "$SPACED" "$POTLUCK_ALLOC"'
    try:
        async with aiohttp.ClientSession() as http:
            for command in (None, ["sleep", "3600"]):
                await gatewayed.allocate(http, command=command)
                await _until(f"a warm container for {command}", partial(_frozen_of, client, command), pool)
                alloc_id = await gatewayed.allocate(http, command=command, env=values)
                taken = client.containers.get(f"potluck-{alloc_id}")
                assert taken.labels.get("potluck.warm") == "1", f"{command}: not taken warm\n{pool.logs(80)}"
                assert not any(e.startswith(("SECRET=", "SPACED=")) for e in taken.attrs["Config"]["Env"])
                said = await gatewayed.ssh(alloc_id, show)
                assert said.returncode == 0, said.stderr + pool.logs(80)
                assert said.stdout == f"{values['SECRET']}|a  b|{alloc_id}"
    finally:
        client.close()


async def test_a_drain_taken_back_makes_warm_containers_again(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: on a host with `warm_containers = 1`, one allocation placed (so one of its shape is
    made ahead); the member drains it with a long grace, then resumes it. Must hold: the drain
    removes the warm container, the resume brings one of that shape back, and the allocation
    runs on throughout."""
    host = await pool.enroll("laptop-warm")
    pool.write_config(host, docker_engines[0], warm_containers=1)
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    client = docker.DockerClient(base_url=docker_engines[0].url)
    try:
        await place(pool.store, host.host_id, "work", spec())
        await wait_for_status(pool, "work", "running")
        await _until("a warm container made ahead", lambda: _warm(client), pool)
        drained = await asyncio.to_thread(member, host, "drain", "--grace", "600")
        assert drained.returncode == 0, drained.stderr
        await _until("the drain removing the warm container", lambda: not _warm(client), pool)
        resumed = await asyncio.to_thread(member, host, "resume")
        assert resumed.returncode == 0, resumed.stderr
        await pool.wait_for_host(host.host_id, "active")
        [again] = await _until("a warm container made ahead again", lambda: _warm(client), pool)
        assert again.labels.get("potluck.allocation") == ""
        state = await allocation(pool.store, "work")
        assert state is not None
        assert state.status == "running", state
    finally:
        client.close()


@pytest.mark.parametrize("value", [-1, 9])
def test_a_bad_warm_containers_setting_stops_hostd_naming_it(value: int, tmp_path: Any) -> None:
    """Tried: a hostd.toml with warm_containers out of range. Must hold: loading it fails with
    the file, the field and the allowed range named."""
    from potluck.hostd.config import ConfigError, load_config

    path = tmp_path / "hostd.toml"
    path.write_text(
        'host_id = "h-0123456789ab"\ncredentials_file = "c"\nstate_dir = "s"\n'
        f'warm_containers = {value}\n[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n'
    )
    with pytest.raises(ConfigError, match=r"hostd.toml: warm_containers: .*from 0 \(keep none\) to 8"):
        load_config(path)
