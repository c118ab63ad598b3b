"""Shared steps of the end-to-end tests."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
from nats.js.errors import NotFoundError

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import ALLOCATOR_STATE, host_consumer
from potluck.events import EVENTS_STREAM
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.sshgateway.client import ssh_argv
from tests.fixtures.pool import EnrolledHost, Pool, allocation


async def consumer_removed(pool: Pool, gone: EnrolledHost, *kept: EnrolledHost, timeout: float = 30) -> None:
    """Within `timeout`, the events consumer of `gone` is no longer on the server (the registry
    removed it); those of the `kept` hosts still are."""
    nc = await pool.client()
    try:
        js = nc.jetstream()
        for host in kept:
            await js.consumer_info(EVENTS_STREAM, host_consumer(host.host_id))
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await js.consumer_info(EVENTS_STREAM, host_consumer(gone.host_id))
            except NotFoundError:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{host_consumer(gone.host_id)} still there\n{pool.logs()}")
            await asyncio.sleep(0.2)
        for host in kept:
            await js.consumer_info(EVENTS_STREAM, host_consumer(host.host_id))
    finally:
        await nc.close()
    assert "registry.consumer_removed" in pool.processes["registry"].log_path.read_text(errors="replace")


async def wait_for_status(pool: Pool, alloc_id: str, status: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await allocation(pool.store, alloc_id)
        if state is not None and state.status == status:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"allocation {alloc_id} is {state.status if state else 'unknown'}, "
                f"not {status}\n{pool.logs()}"
            )
        await asyncio.sleep(0.1)


@pytest.fixture
async def laptop(pool: Pool, docker_engines: list[DockerEngine]) -> EnrolledHost:
    """One enrolled, registered, online host on the first private engine."""
    return await start_laptop(pool, docker_engines[0])


async def start_laptop(
    pool: Pool, engine: DockerEngine, name: str = "laptop-a", **config: Any
) -> EnrolledHost:
    """Enroll `name` and start its hostd on `engine` (`config`: hostd.toml's keys over the pool's
    defaults), registered, online and with its images reported."""
    host = await pool.enroll(name)
    pool.write_config(host, engine, **config)
    pool.start_hostd(host)
    await pool.central_services_ready()  # see HOST_FIXTURES_THAT_WAIT
    await pool.wait_for_host(host.host_id, "active")
    await pool.wait_for_images(host.host_id)
    return host


class Gatewayed:
    """A pool with a gateway and one hostd linked to it; a user with a key and a token."""

    def __init__(self, pool: Pool, host: EnrolledHost, ssh_port: int, key: Path, token: str) -> None:
        self.pool = pool
        self.host = host
        self.ssh_port = ssh_port
        self.key = key
        self.token = token

    async def allocate(
        self,
        http: aiohttp.ClientSession,
        *,
        command: list[str] | None = ["sleep", "3600"],  # noqa: B006 (never mutated)
        image: str = DEFAULT_TAG,
        disk: str = "64M",
        memory: str = "64M",
        env: dict[str, str] | None = None,
    ) -> str:
        """A running allocation's id; `command=None` asks for an interactive one."""
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {
            "cpus": 0.5,
            "memory": memory,
            "disk": disk,
            "image": image,
            "command": command,
            "env": env or {},
            "ssh_keys": [Path(f"{self.key}.pub").read_text().strip()],
        }
        async with http.post(f"{self.pool.api}/v1/allocations", json=body, headers=headers) as r:
            created: dict[str, Any] = await r.json()
            assert r.status == 201, created
        url = f"{self.pool.api}/v1/allocations/{created['id']}?wait=running&timeout=30"
        async with http.get(url, headers=headers) as r:
            running = await r.json()
        assert running["state"] == "running", self.pool.logs()
        return str(created["id"])

    def ssh_argv(self, alloc_id: str, command: str) -> list[str]:
        argv = ssh_argv(alloc_id, "127.0.0.1", self.ssh_port, self.key, command=[command], tty=False)
        # A clean client: no user config, no agent, no prompt for the gateway's key.
        argv[1:1] = [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ]
        argv[1:1] = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        return argv

    @staticmethod
    def ssh_env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}

    async def ssh(self, alloc_id: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = self.ssh_argv(alloc_id, command)
        return await asyncio.to_thread(
            subprocess.run,
            argv,
            capture_output=True,
            text=True,
            env=self.ssh_env(),
            timeout=timeout,
            check=False,
        )

    async def ssh_process(self, alloc_id: str, command: str) -> asyncio.subprocess.Process:
        """A session left open for the test to talk to: its stdin and stdout are pipes."""
        return await asyncio.create_subprocess_exec(
            *self.ssh_argv(alloc_id, command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.ssh_env(),
        )


@pytest.fixture
async def gatewayed(pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path) -> Gatewayed:
    return await start_gatewayed(pool, docker_engines[0], tmp_path)


@pytest.fixture
async def files(
    pool: Pool, docker_engines: list[DockerEngine], default_image: str, tmp_path: Path
) -> Gatewayed:
    """A gateway and a hostd that may run both the default image and the busybox test image."""
    return await start_gatewayed(
        pool,
        docker_engines[0],
        tmp_path,
        allowed_images=[DEFAULT_TAG, default_image],
        donate={"cpus": 2, "memory": "2G", "disk": "6G"},
    )


async def start_gatewayed(pool: Pool, engine: DockerEngine, tmp_path: Path, **config: Any) -> Gatewayed:
    """A gateway, one hostd on `engine` linked to it (its config with `config` on top), a user."""
    ssh_port, tunnel_port = free_port(), free_port()
    client_key = pool.gateway_client_key()
    pool.start_gateway(listen=f"127.0.0.1:{ssh_port}", tunnel_listen=f"127.0.0.1:{tunnel_port}")
    host = await pool.enroll("laptop-a")
    pool.write_config(
        host,
        engine,
        gateways=[{"address": f"127.0.0.1:{tunnel_port}", "client_key": client_key}],
        **config,
    )
    pool.start_hostd(host)
    await pool.central_services_ready()  # see HOST_FIXTURES_THAT_WAIT
    await pool.wait_for_host(host.host_id, "active")
    await pool.wait_for_images(host.host_id)
    await asyncio.to_thread(wait_for_port, ssh_port, what="the SSH gateway", timeout=30)
    key = tmp_path / "id_alice"
    await asyncio.to_thread(
        subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    return Gatewayed(pool, host, ssh_port, key, await pool.add_user("alice"))


def member(host: EnrolledHost, *args: str) -> subprocess.CompletedProcess[str]:
    """The member's own command on `host`: `potluck host ARGS --config <its hostd.toml>`."""
    return subprocess.run(
        [sys.executable, "-m", "potluck", "host", *args, "--config", str(host.config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hostd_started_with(config: Path) -> subprocess.CompletedProcess[str]:
    """`potluck hostd --config CONFIG`, for a configuration it must refuse at start (it returns)."""
    return subprocess.run(
        [sys.executable, "-m", "potluck", "hostd", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: The real command: `potluck ops ...`.
POTLUCK_OPS = (sys.executable, "-m", "potluck", "ops")


async def ops(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *POTLUCK_OPS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def replay_agrees(pool: Pool) -> None:
    """`potluck ops replay --check` finds no difference between the running registry's and
    allocator's read models and a rebuild from the log."""
    code, out, err = await ops(
        "replay",
        "--check",
        "--database-url",
        pool.database_url,
        "--nats-url",
        pool.nats.url,
        "--nats-seed-file",
        str(pool.services_seed_file),
    )
    assert code == 0, out + err + pool.logs()
    assert out.count("no difference") == 2, out


def engine_image_id(engine: DockerEngine, reference: str) -> str | None:
    """The id of the image `engine` holds under `reference` (None: it holds none)."""
    client = docker.DockerClient(base_url=engine.url)
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None
    finally:
        client.close()


def containers_from(engine: DockerEngine, image_id: str) -> list[str]:
    """The containers (any state, warm ones too) `engine` made from the image `image_id`."""
    client = docker.DockerClient(base_url=engine.url)
    try:
        return [str(c.name) for c in client.containers.list(all=True) if c.attrs.get("Image") == image_id]
    finally:
        client.close()


async def allocator_at(pool: Pool, position: int, timeout: float = 30) -> None:
    """Until the allocator has folded the log up to `position` (its state answer says where it is)."""
    nc = await pool.client()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            msg = await nc.request(ALLOCATOR_STATE, b'{"digests": true}', timeout=10)
            reply = Reply.model_validate_json(msg.data)
            if reply.ok and reply.data["position"] >= position:
                return
            assert asyncio.get_running_loop().time() < deadline, (reply, pool.logs())
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
