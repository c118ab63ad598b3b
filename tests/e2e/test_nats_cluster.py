"""The pool on a three-node NATS cluster, streams replicated three times: one node dies under load."""

import asyncio
import collections
from typing import Any

import aiohttp

from potluck.contracts.allocation_events import alloc_stream
from potluck.events import EVENTS_STREAM
from potluck.events.bus import H_MSG_ID
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack import NatsCluster
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.pool import Pool

#: Allocations asked for before the kill, and after it.
BEFORE, AFTER = 4, 8
SMALL: dict[str, Any] = {
    "cpus": 0.1,
    "memory": "32M",
    "disk": "32M",
    "image": DEFAULT_TAG,
    "command": ["sleep", "3600"],
}


async def test_killing_one_nats_node_under_load_loses_nothing_and_stops_nothing(
    cluster_pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: registry, allocator and two hostds (two engines) on a three-node cluster with every
    stream kept on all three nodes; allocations are created through the API in a loop, heartbeats
    run, and the node leading the events stream is killed with SIGKILL.
    Must hold after: every request was accepted and placed exactly once (the log), all of them,
    those asked for after the kill too, run (one container each: none delivered twice to a
    hostd), no host was ever suspected or lost, and JetStream holds every logged event exactly
    once (the relay lost none and doubled none)."""
    pool = cluster_pool
    cluster = pool.nats
    assert isinstance(cluster, NatsCluster)
    hosts = []
    for name, engine in zip(("laptop-a", "laptop-b"), docker_engines[:2], strict=True):
        host = await pool.enroll(name)
        pool.write_config(host, engine)
        pool.start_hostd(host)
        hosts.append(host)
    for host in hosts:
        await pool.wait_for_host(host.host_id, "active")
    await pool.wait_api()
    token = await pool.add_user("alice", allocations=100)
    headers = {"Authorization": f"Bearer {token}"}

    nc = await pool.client()
    js = nc.jetstream()
    info = await js.stream_info(EVENTS_STREAM)
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert info.cluster.leader is not None
    leader = info.cluster.leader

    created: list[str] = []
    refused: list[tuple[int, Any]] = []
    stop = asyncio.Event()

    async def ask_in_a_loop(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with http.post(f"{pool.api}/v1/allocations", json=SMALL, headers=headers) as r:
                body = await r.json()
                if r.status == 201:
                    created.append(str(body["id"]))
                else:
                    refused.append((r.status, body))
            await asyncio.sleep(0.05)

    async def until(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{what} after {timeout}s\n{pool.logs()}")
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession() as http:
        asking = asyncio.create_task(ask_in_a_loop(http))
        try:
            await until(lambda: len(created) >= BEFORE or bool(refused), "too few allocations created")
            cluster.kill(int(leader.rsplit("-", 1)[1]) - 1)  # node names end in their number
            await until(lambda: len(created) >= BEFORE + AFTER or bool(refused), "placements stopped")
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await asking
        assert not refused, refused
        for alloc_id in created:
            url = f"{pool.api}/v1/allocations/{alloc_id}?wait=running&timeout=60"
            async with http.get(url, headers=headers) as r:
                state = await r.json()
            assert state["state"] == "running", f"{alloc_id}: {state}\n{pool.logs()}"

    for alloc_id in created:
        types = [e.type for e in await pool.store.read_stream(alloc_stream(alloc_id))]
        assert types.count("AllocationPlaced") == 1, (alloc_id, types)

    logged = []
    position = 0
    while batch := await pool.store.read_all(position):
        logged += batch
        position = batch[-1].position
    assert not [e for e in logged if e.type in ("HostSuspected", "HostLost")], pool.logs()

    containers = collections.Counter[str]()
    for engine in docker_engines[:2]:
        with DockerDriver(engine.url) as driver:
            containers.update(c.allocation_id for c in driver.list_managed(None) if c.allocation_id)
    assert containers == collections.Counter(created)

    # The relay may still be publishing the last events: wait for every one, then compare.
    wanted = collections.Counter(e.event_id_text for e in logged)
    published: collections.Counter[str] = collections.Counter()

    async def read_published() -> None:
        nonlocal published
        state = (await js.stream_info(EVENTS_STREAM)).state
        published = collections.Counter()
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(EVENTS_STREAM, seq)
            published[(msg.headers or {})[H_MSG_ID]] += 1

    deadline = asyncio.get_running_loop().time() + 30
    await read_published()
    while not wanted.keys() <= published.keys() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        await read_published()
    await nc.close()
    assert [i for i, n in published.items() if n > 1] == []
    assert set(wanted) - set(published) == set(), pool.logs()
