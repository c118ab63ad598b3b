"""`potluck ops hollow`: many hollow hosts in one process, on a real pool (NATS, Postgres,
registry, allocator), for scale tests."""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import wait_for_status
from tests.fixtures.pool import Pool, allocation

HOSTS = 20
#: Events that take a host out of the pool: stopping hollow hosts must log none.
_ENDINGS = frozenset({"HostDeregistered", "HostLeft", "HostRevoked"})
#: Beats every second, suspect after five missed: two loaded cores do not make one suspect.
LIVENESS = (1.0, 5, 60.0)


@pytest.fixture
async def bare_pool(tmp_path: Path, database_url: str) -> AsyncIterator[Pool]:
    """Registry and allocator on secured NATS and a fresh log; no Docker engine at all."""
    pool = await Pool.create(tmp_path, database_url, liveness=LIVENESS, log_level="INFO")
    try:
        await pool.start_central_services()
        yield pool
    finally:
        await pool.close()


async def _active_hollow(pool: Pool) -> dict[str, Any]:
    view = await pool.hosts()
    return {
        h: s
        for h, s in view.hosts.items()
        if s.status == "active" and (s.labels or {}).get("hollow") == "true"
    }


async def test_hollow_hosts_register_take_an_allocation_and_stop_quietly(
    bare_pool: Pool, tmp_path: Path
) -> None:
    """`ops hollow --hosts 20` on a running pool: all 20 register active (labelled hollow); an
    allocation or a job not constrained to hollow=true is refused (only hollow hosts are in the
    pool, and they run nothing), while an allocation constrained to it is placed on one of them
    and reported running; SIGTERM ends the process with status 0 having deregistered, left or
    revoked nothing."""
    pool = bare_pool
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "potluck", "ops", "hollow",
        "--hosts", str(HOSTS),
        "--database-url", pool.database_url,
        "--nats-url", pool.nats.url,
        "--workdir", str(tmp_path / "hollow"),
        "--heartbeat", str(LIVENESS[0]),
        "--nats-auth-file", str(pool.nats.auth_file),
        "--nats-pid-file", str(pool.nats.pid_file),
        "--service-seed-file", str(pool.services_seed_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "POTLUCK_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    try:
        deadline = asyncio.get_running_loop().time() + 90
        while len(await _active_hollow(pool)) < HOSTS:
            assert proc.returncode is None, (await proc.communicate())[1].decode()
            assert asyncio.get_running_loop().time() < deadline, f"not all hosts active\n{pool.logs()}"
            await asyncio.sleep(0.5)
        active = await _active_hollow(pool)
        assert len(active) == HOSTS

        token = await pool.add_user("ann", allocations=5, cpus=4.0, memory_bytes=4 << 30, disk_bytes=8 << 30)
        body = {
            "cpus": 0.5,
            "memory": "64M",
            "disk": "64M",
            "image": "busybox:latest",
            "command": ["sleep", "1"],
        }
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            # Ordinary work, an allocation or a job's tasks, never goes where it would run on nothing.
            for path, ordinary in (("/v1/allocations", body), ("/v1/jobs", {**body, "tasks": 2})):
                async with http.post(f"{pool.api}{path}", json=ordinary) as r:
                    refused = await r.json()
                    assert r.status == 422, refused
                assert refused["error"]["code"] == "NO_HOST_MATCHES", refused
                assert refused["error"]["field"] == "constraints", refused
                assert refused["error"]["message"] == (
                    "no host in the pool takes it: the pool has only hollow hosts, and "
                    "hollow hosts take only requests constrained to hollow=true"
                ), refused
            async with http.post(
                f"{pool.api}/v1/allocations", json={**body, "constraints": {"hollow": "true"}}
            ) as r:
                created = await r.json()
                assert r.status == 201, created
            # The refusals recorded nothing: the user holds only what was placed.
            async with http.get(f"{pool.api}/v1/allocations") as r:
                listed = await r.json()
                assert r.status == 200, listed
            assert [a["id"] for a in listed["allocations"]] == [created["id"]]
            async with http.get(f"{pool.api}/v1/jobs") as r:
                jobs = await r.json()
                assert r.status == 200, jobs
            assert jobs["jobs"] == [], jobs
        alloc_id = str(created["id"])
        await wait_for_status(pool, alloc_id, "running", timeout=60)
        state = await allocation(pool.store, alloc_id)
        assert state is not None
        assert state.host_id in active, state
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    ended = [e.type for e in await pool.store.read_all(limit=1_000_000) if e.type in _ENDINGS]
    assert ended == []
    assert "nothing deregistered" in err.decode()
