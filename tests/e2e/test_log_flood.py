"""A container's output costs the member's Docker engine CPU outside the container's limits.

Measured (bench/README.md, `log_flood`): a container capped at 0.5 CPU writing `yes` keeps
dockerd busy at about a core while it uses 1 % itself; a lower quota does not slow it. hostd
counts its shim's and its share of dockerd's CPU against its cap and pauses it while the budget
is spent (services/hostd/log_cost.py). Real engine, NATS, Postgres and hostd.
"""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import docker

from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.user.client import Login
from tests.e2e.conftest import start_gatewayed, start_laptop, wait_for_status
from tests.fixtures.pool import Pool, place, release, spec
from tests.helpers import wait_until


def _pauses(engine: DockerEngine, since: float, name: str) -> list[str]:
    """The engine's pause and unpause events for container `name` since `since`, in order."""
    client = docker.APIClient(base_url=engine.url)
    try:
        events = client.events(
            since=int(since),
            until=int(time.time()) + 1,
            filters={"type": "container", "event": ["pause", "unpause"], "container": name},
            decode=True,
        )
        return [str(event.get("Action") or event.get("status")) for event in events]
    finally:
        client.close()


def _tail(engine: DockerEngine, name: str) -> bytes:
    client = docker.APIClient(base_url=engine.url)
    try:
        return bytes(client.logs(name, tail=3))
    finally:
        client.close()


async def test_a_container_flooding_its_log_is_paused_while_the_engine_works_past_its_cap(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: an allocation capped at 0.2 CPU runs `yes` (2-byte lines, as fast as it can), and
    beside it one that writes nothing. Must hold: hostd logs that it held the flooding one for
    its output's cost, naming it, and the engine shows that container paused and unpaused
    again; its log is still there to read; the quiet one is never paused. Released, the
    flooding one's container is removed (paused or not), and hostd holds nothing more."""
    engine = docker_engines[0]
    laptop = await start_laptop(pool, engine, log_bound=True)
    since = time.time() - 1
    await place(pool.store, laptop.host_id, "flood", spec(cpus=0.2, command=["yes"]))
    await place(pool.store, laptop.host_id, "quiet", spec(cpus=0.2, command=["sleep", "3600"]))
    await wait_for_status(pool, "flood", "running")
    await wait_for_status(pool, "quiet", "running")
    assert laptop.process is not None
    process = laptop.process

    def held() -> bool:
        return any(
            "hostd.log_bound_held" in line and '"flood"' in line
            for line in process.log_tail(400).splitlines()
        )

    await wait_until(held, 60, "hostd to hold the flooding container: " + process.log_tail(20))
    await wait_until(
        lambda: "unpause" in _pauses(engine, since, "potluck-flood"),
        30,
        "the flood's container unpaused again",
    )
    flood = _pauses(engine, since, "potluck-flood")
    assert flood[0] == "pause", flood
    assert b"y\n" in await asyncio.to_thread(_tail, engine, "potluck-flood")
    assert _pauses(engine, since, "potluck-quiet") == []
    line = next(line for line in process.log_tail(400).splitlines() if "hostd.log_bound_held" in line)
    assert '"cap_cpus": 0.2' in line, line

    await release(pool.store, laptop.host_id, "flood")
    client = docker.APIClient(base_url=engine.url)
    try:
        await wait_until(
            lambda: not client.containers(all=True, filters={"name": "potluck-flood"}),
            30,
            "the released flood's container to be removed",
        )
        quiet = client.inspect_container("potluck-quiet")["State"]
        assert quiet["Running"], quiet
        assert not quiet["Paused"], quiet
    finally:
        client.close()


async def test_a_quiet_container_the_engine_keeps_asking_about_is_not_charged_for_anothers_output(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: a member's own container (not the pool's) writes `yes` on the laptop's engine, so
    dockerd spends about a core on its output; beside it an allocation capped at 0.2 CPU runs
    `sleep`, and for 20 s the engine is asked about that allocation's container in a loop (an
    inspect and a `docker top` at a time, as monitoring tools and hostd itself ask), which keeps
    its shim busy (2 ms a second measured: as busy as the flood's).
    Must hold: the allocation's container is never paused, and hostd never logs a hold of it.
    Before, its shim's CPU counted as output carried, took a third of the shares and with them
    a third of what dockerd spent on the member's flood (a full run: 0.23 of a core charged to
    `sleep`, paused as a flood)."""
    engine = docker_engines[0]
    laptop = await start_laptop(pool, engine, log_bound=True)
    since = time.time() - 1
    client = docker.APIClient(base_url=engine.url)
    member = client.create_container(
        DEFAULT_TAG, command=["yes"], host_config=client.create_host_config(network_mode="none")
    )
    try:
        client.start(member)
        await place(pool.store, laptop.host_id, "asked", spec(cpus=0.2, command=["sleep", "3600"]))
        await wait_for_status(pool, "asked", "running")

        def ask(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                client.inspect_container("potluck-asked")
                client.top("potluck-asked")

        await asyncio.to_thread(ask, 20)
        assert _pauses(engine, since, "potluck-asked") == []
        assert laptop.process is not None
        assert not [
            line
            for line in laptop.process.log_tail(400).splitlines()
            if "hostd.log_bound_held" in line and '"asked"' in line
        ]
    finally:
        client.remove_container(member, force=True)
        client.close()


async def test_sessions_and_potluck_logs_reach_a_container_the_log_bound_holds(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """Tried: through the gateway with the real `ssh` and `potluck logs`, a user reaches her
    allocation that runs `yes` (0.5 CPU) while hostd holds it paused a moment at a time for its
    output's cost (the engine refuses an exec into a paused container). Must hold: hostd did hold
    it; three sessions in a row each run their command (exit 0, its output back), and
    `potluck logs --tail 1` prints the container's last line, `y`."""
    g = await start_gatewayed(pool, docker_engines[0], tmp_path, log_bound=True)
    async with aiohttp.ClientSession() as http:
        alloc_id = await g.allocate(http, command=["yes"])
    assert g.host.process is not None
    process = g.host.process

    def held() -> bool:
        return any(
            "hostd.log_bound_held" in line and alloc_id in line for line in process.log_tail(400).splitlines()
        )

    await wait_until(held, 60, "hostd to hold the flooding container: " + process.log_tail(20))
    for attempt in range(3):
        done = await g.ssh(alloc_id, f"echo inside-{attempt}")
        assert done.returncode == 0, (done.stderr, process.log_tail(20))
        assert done.stdout == f"inside-{attempt}\n", done.stdout

    config = tmp_path / "client" / "client.toml"
    Login(g.pool.api, g.token, f"127.0.0.1:{g.ssh_port}").save(config)
    env = {**g.ssh_env(), "POTLUCK_CONFIG": str(config)}
    logs = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "potluck", "logs", "-i", str(g.key), "--tail", "1", alloc_id],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "y\n", logs.stdout
