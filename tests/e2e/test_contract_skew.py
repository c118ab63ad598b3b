"""hostd and the pool's services speaking different contracts (README: Upgrading), on a real pool.

NATS, Postgres, the registry, the allocator and hostd on a private Docker engine, all real.
This code base speaks one contract, so the other side is played: a hostd of another contract
by a client with the host's own NATS identity, or by hostd's own agent run in the test's
process with its contract number changed; a host whose hostd kept running through an upgrade
of the services by its HostRegistered under another contract, appended to its stream as the
registry of an earlier version recorded it.
"""

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest

from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.host_events import HostRegistered, host_stream
from potluck.contracts.messages import RegisterHost, Reply
from potluck.contracts.subjects import REGISTER
from potluck.hostd import agent
from potluck.hostd.config import load_config
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.readmodels.hosts import HostState
from tests.e2e.conftest import allocator_at, ops
from tests.fixtures.pool import EnrolledHost, Pool
from tests.helpers import capture_module_log

OTHER = CONTRACT_VERSION + 1


def registration(state: HostState, contract: int) -> RegisterHost:
    """What the host's hostd sent, but for the contract."""
    assert state.donated is not None
    assert state.engine is not None
    return RegisterHost(
        donated=state.donated,
        labels=state.labels,
        allowed_images=list(state.allowed_images),
        allow_network=state.allow_network,
        engine=state.engine,
        hostd_version=state.hostd_version,
        ssh_host_key=state.ssh_host_key,
        contract=contract,
    )


async def host_state(pool: Pool, host_id: str) -> HostState:
    return (await pool.hosts()).hosts[host_id]


async def test_a_hostd_of_another_contract_is_refused_and_a_host_left_behind_gets_no_new_work(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """What is tried: (1) the host registers naming a contract newer than the pool's; (2) the
    host stands registered under that contract (its hostd outlived the services' version), and
    a user asks for an allocation only it could hold; (3) hostd is restarted, as after its
    member upgraded it. What must hold: (1) the refusal is CONTRACT_MISMATCH saying the pool's
    services are the older side, and nothing is recorded; (2) the request waits with
    `no_schedulable_host`, saying hosts may await an upgrade, and the operator's host list
    names the host's contract; (3) the restarted hostd registers under the pool's contract and
    the waiting request is placed and runs there."""
    host_id = laptop.host_id
    stream = host_stream(host_id)
    state = await host_state(pool, host_id)
    assert state.contract == CONTRACT_VERSION

    as_host = await pool.client(laptop)
    version_before = await pool.store.stream_version(stream)
    msg = await as_host.request(
        f"{REGISTER}.{host_id}", registration(state, OTHER).model_dump_json().encode(), timeout=10
    )
    reply = Reply.model_validate_json(msg.data)
    assert not reply.ok, reply
    assert reply.error is not None
    assert reply.error["code"] == "CONTRACT_MISMATCH", reply.error
    said = reply.error["message"]
    assert f"this hostd speaks contract {OTHER} and the pool's services {CONTRACT_VERSION}" in said
    assert "the pool's services are older" in said
    assert await pool.store.stream_version(stream) == version_before
    await as_host.close()

    left_behind = HostRegistered(**{**registration(state, OTHER).model_dump(), "host_id": host_id})
    [recorded] = await pool.store.append(stream, [left_behind])
    await allocator_at(pool, recorded.position)

    token = await pool.add_user("alice")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"cpus": 0.25, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "3600"]}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{pool.api}/v1/allocations", json=body) as r:
            created: dict[str, Any] = await r.json()
            assert r.status == 202, created
        assert created["state"] == "pending", created
        assert created["waiting"]["reason"] == "no_schedulable_host", created
        assert "awaits an upgrade" in created["waiting"]["message"], created

        code, out, err = await ops("hosts", "list", "--database-url", pool.database_url, "--json")
        assert code == 0, out + err
        [row] = [r for r in map(_json, out.splitlines()) if r["host_id"] == host_id]
        assert row["contract"] == OTHER, row
        code, table, err = await ops("hosts", "list", "--database-url", pool.database_url, "--table")
        assert code == 0, table + err
        assert f"hostd speaks contract {OTHER}, the pool {CONTRACT_VERSION}: nothing is placed here" in table

        assert laptop.process is not None
        laptop.process.kill()
        pool.start_hostd(laptop)
        url = f"{pool.api}/v1/allocations/{created['id']}?wait=running&timeout=60"
        async with http.get(url) as r:
            running = await r.json()
        assert running["state"] == "running", (running, pool.logs())
        assert running["host_id"] == host_id
    assert (await host_state(pool, host_id)).contract == CONTRACT_VERSION


async def test_a_hostd_of_another_contract_waits_touching_nothing_and_keeps_asking(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is tried: hostd's agent, speaking a newer contract than the pool, starts for a newly
    enrolled machine. What must hold: it is refused, logs `hostd.contract_mismatch` with the
    registry's words (the pool's services are older), asks again rather than crashing or
    stopping for good (so it joins once the services are upgraded), and meanwhile the machine
    is recorded as enrolled only: no registration, nothing placed or started."""
    host = await pool.enroll("laptop-newer")
    config = load_config(pool.write_config(host, docker_engines[0]))
    capture = capture_module_log(agent, monkeypatch)
    monkeypatch.setattr(agent, "CONTRACT_VERSION", OTHER)
    monkeypatch.setattr(agent, "CONTRACT_RETRY_FIRST_S", 0.2)
    await pool.central_services_ready()
    newer = agent.Agent(config)
    running = asyncio.ensure_future(newer.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while len(mismatches := [e for e in capture.entries if e["event"] == "hostd.contract_mismatch"]) < 3:
            assert not running.done(), running.exception() if not running.cancelled() else "cancelled"
            assert asyncio.get_running_loop().time() < deadline, (capture.entries, pool.logs())
            await asyncio.sleep(0.1)
        assert all(e["log_level"] == "error" for e in mismatches)
        assert "the pool's services are older" in mismatches[0]["hint"], mismatches[0]
        assert [e["retry_in"] for e in mismatches[:3]] == [0.2, 0.4, 0.8]
        assert not newer.ready.is_set()
        assert (await host_state(pool, host.host_id)).status == "enrolled"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def _json(line: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(line)
    return row
