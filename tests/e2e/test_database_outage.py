"""Postgres goes away under running services: they keep running, say so, and catch up after.

The log is the truth, so while it is away nothing can be decided; but a service must not end
because a background loop (the allocator's expiry, the registry's liveness) met a lost
connection. It logs what went wrong and decides again once the database is back.
"""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.postgres_server import PostgresServer
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.pool import Pool


@pytest.mark.slow
async def test_services_outlive_a_database_outage_and_decide_what_fell_due_meanwhile(
    tmp_path: Path, own_postgres: PostgresServer, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: an allocation whose lifetime ends while Postgres is stopped, so the
    allocator's expiry meets a lost connection, and the registry's liveness loop runs throughout.
    What must hold: neither process ends; once Postgres is back the allocation is expired (as
    the log then says) and the API answers."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, liveness=(0.5, 6, 60.0), log_level="DEBUG")
    try:
        pool.start_registry()
        pool.start_allocator()
        host = await pool.enroll("laptop-a")
        pool.write_config(host, docker_engines[0])
        pool.start_hostd(host)
        await pool.wait_for_host(host.host_id, "active")
        await pool.wait_api()
        headers = {"Authorization": f"Bearer {await pool.add_user('alice')}"}
        body = {
            "cpus": 0.5,
            "memory": "64M",
            "image": DEFAULT_TAG,
            "command": ["sleep", "600"],
            # Long enough for the container to start on a loaded machine (4 s was not, once:
            # the allocation expired before it ran); the outage below waits out what is left.
            "lifetime": 20,
        }
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{pool.api}/v1/allocations", json=body) as r:
                created = await r.json()
                assert r.status == 201, created
            alloc = f"{pool.api}/v1/allocations/{created['id']}"
            async with http.get(f"{alloc}?wait=running&timeout=30") as r:
                shown = await r.json()
                assert shown["state"] == "running", pool.logs()
            expires_at = datetime.fromisoformat(shown["expires_at"])

            await asyncio.to_thread(own_postgres.stop)
            # The lifetime ends while Postgres is away: the expiry meets the lost connection.
            left = (expires_at - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(left, 0) + 2)
            for name in ("registry", "allocator"):
                assert pool.processes[name].running(), f"the {name} ended:\n{pool.logs()}"
            await asyncio.to_thread(own_postgres.start)

            state = None
            for _ in range(150):
                try:
                    async with http.get(alloc) as r:
                        if r.status == 200:
                            state = (await r.json())["state"]
                            if state == "expired":
                                break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            assert state == "expired", pool.logs()
        assert "allocator.reaction_failed" in pool.processes["allocator"].log_tail(400)
        library_lines = []
        for name in ("registry", "allocator"):
            assert pool.processes[name].running(), f"the {name} ended:\n{pool.logs()}"
            # Every line one JSON object, the libraries' too: asyncpg's "Failed to restore the
            # pool connection floor" came as bare text with a traceback, most of the log's lines.
            for line in pool.processes[name].log_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    raise AssertionError(f"a line of the {name}'s log is not JSON: {line!r}") from None
                if record.get("logger", "").startswith("asyncpg"):
                    library_lines.append(record)
        assert library_lines, "asyncpg said nothing while the database was away"
        assert all("error" in r and "exception" not in r for r in library_lines), library_lines[:3]
    finally:
        await pool.close()
        with DockerDriver(docker_engines[0].url) as driver:
            for container in driver.list_managed(None):
                driver.remove(container.container_id)


async def test_a_hostd_started_while_the_database_is_away_registers_once_it_is_back(
    tmp_path: Path, own_postgres: PostgresServer, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: a member starts hostd while the pool's Postgres is stopped, so the
    registry cannot read or write the log for its registration. Before, the registry answered
    INTERNAL with a traceback in its log for every try, and hostd took any refusal it did not
    know for final: it crashed, and only its supervisor's restart brought it back.
    What must hold: the registry answers LOG_UNAVAILABLE ("not now") and logs it without a
    traceback; hostd keeps running, says it will ask again, and is active in the pool once
    Postgres is back, with the same process throughout."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, log_level="DEBUG")
    try:
        pool.start_registry()
        host = await pool.enroll("laptop-a")
        pool.write_config(host, docker_engines[0])
        await pool.wait_registry()
        await asyncio.to_thread(own_postgres.stop)
        hostd = pool.start_hostd(host)
        pid = hostd.pid
        for _ in range(150):
            if "hostd.registration_deferred" in hostd.log_tail(200):
                break
            assert hostd.running(), f"hostd ended:\n{pool.logs()}"
            await asyncio.sleep(0.2)
        assert "hostd.registration_deferred" in hostd.log_tail(200), pool.logs()
        assert '"code": "LOG_UNAVAILABLE"' in hostd.log_tail(200), pool.logs()
        await asyncio.to_thread(own_postgres.start)
        await pool.wait_for_host(host.host_id, "active", timeout=60)
        assert hostd.running(), pool.logs()
        assert hostd.pid == pid
        assert "hostd.crashed" not in hostd.log_tail(400)
        registry_log = pool.processes["registry"].log_tail(400)
        assert "registry.log_unavailable" in registry_log
        assert "registry.request_failed" not in registry_log
    finally:
        await pool.close()
