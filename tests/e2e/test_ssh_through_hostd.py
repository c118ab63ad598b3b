"""The whole path of an SSH session with every real part: the allocator places the work, the real
`potluck hostd` runs it and dials the gateway, the real `ssh` client logs in.

tests/e2e/test_ssh_gateway.py covers the gateway's behaviour in depth with hostd's link alone;
this file shows that the assembled hostd does the same, and survives a kill -9.
"""

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from potluck.events import EventStore
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.sshgateway.client import ssh_argv
from tests.fixtures.pool import EnrolledHost, Pool


class Gatewayed:
    """A pool with a gateway and one hostd linked to it; a user with a key and a token."""

    def __init__(self, pool: Pool, host: EnrolledHost, ssh_port: int, key: Path, token: str) -> None:
        self.pool = pool
        self.host = host
        self.ssh_port = ssh_port
        self.key = key
        self.token = token

    async def allocate(self, http: aiohttp.ClientSession) -> str:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {
            "cpus": 0.5,
            "memory": "64M",
            "disk": "64M",
            "image": DEFAULT_TAG,
            "command": ["sleep", "3600"],
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

    async def ssh(self, alloc_id: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
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
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )


@pytest.fixture
async def gatewayed(pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path) -> Gatewayed:
    ssh_port, tunnel_port = free_port(), free_port()
    client_key = pool.gateway_client_key()
    pool.start_gateway(listen=f"127.0.0.1:{ssh_port}", tunnel_listen=f"127.0.0.1:{tunnel_port}")
    host = await pool.enroll("laptop-a")
    pool.write_config(
        host,
        docker_engines[0],
        gateways=[{"address": f"127.0.0.1:{tunnel_port}", "client_key": client_key}],
    )
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "online")
    await asyncio.to_thread(wait_for_port, ssh_port, what="the SSH gateway", timeout=30)
    await pool.wait_api()
    key = tmp_path / "id_alice"
    await asyncio.to_thread(
        subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    return Gatewayed(pool, host, ssh_port, key, await pool.add_user("alice"))


async def session_ends(store: EventStore, alloc_id: str) -> list[dict[str, Any]]:
    records = await store.read_all(0, limit=100_000)
    return [r.data for r in records if r.type == "SessionEnded" and r.data.get("alloc_id") == alloc_id]


@pytest.mark.slow
@pytest.mark.liveness(0.25, 8, 60.0)  # a restart of hostd must not outlast the grace: no lost work
async def test_a_session_runs_in_the_container_hostd_started_and_survives_hostd_killed(
    gatewayed: Gatewayed,
) -> None:
    """What is tried: a command over ssh; then kill -9 of hostd and a start of a new one.
    What must hold: the exit status comes back; the container keeps running (hostd adopts it);
    a new session works without restarting the gateway; each session is an audit event."""
    async with aiohttp.ClientSession() as http:
        alloc_id = await gatewayed.allocate(http)

    first = await gatewayed.ssh(
        alloc_id,
        # cgroup v2, else v1: either way the container's own memory limit.
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
        " exit 7",
    )
    assert first.returncode == 7, first.stderr + gatewayed.pool.logs()
    assert first.stdout.split() == [str(64 << 20)]

    assert gatewayed.host.process is not None
    gatewayed.host.process.kill()
    gatewayed.pool.start_hostd(gatewayed.host)
    await gatewayed.pool.wait_for_host(gatewayed.host.host_id, "online")

    second = await gatewayed.ssh(alloc_id, "echo again")
    assert second.returncode == 0, second.stderr + gatewayed.pool.logs()
    assert second.stdout == "again\n"

    # The gateway logs a session's end just after the client sees it: wait for the second.
    for _ in range(100):
        ended = await session_ends(gatewayed.pool.store, alloc_id)
        if len(ended) == 2:
            break
        await asyncio.sleep(0.1)
    assert [e["exit_status"] for e in ended] == [7, 0]
    assert all(e["bytes_out"] > 0 for e in ended)
