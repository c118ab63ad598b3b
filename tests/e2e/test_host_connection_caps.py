"""One host's key may hold only so many NATS connections (the registry's connection watch:
services/registry/connection_caps.py and connection_watch.py), on the real pool: nats-server
with Potluck's generated configuration (monitoring on loopback), Postgres, registry,
allocator and hostds on private engines.

nats-server bounds connections per account, and every client shares one: without the watch,
one member's key opened connections until the server's own limit (64K), and the bus was gone
for the whole pool."""

import asyncio
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from potluck.contracts.host_events import HostConnectionsCapped, host_stream
from potluck.contracts.subjects import inbox_prefix
from potluck.localstack import NatsCluster
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import start_laptop
from tests.e2e.test_ops import allocator_now
from tests.fixtures.pool import EnrolledHost, Pool
from tests.fixtures.servers import connect_client, monitored_connections

LIMIT = 8
COOLDOWN_S = 15.0


def _key_of(host: EnrolledHost) -> str:
    from potluck.registry.nats_auth import public_key_of

    return public_key_of(tomllib.loads(host.credentials.read_text())["nats_seed"])


def _connections_of(pool: Pool, host: EnrolledHost) -> int:
    """The host key's open connections, as nats-server's monitoring endpoint lists them."""
    key = _key_of(host)
    held = 0
    for url in pool.nats.monitor_urls:
        connections = monitored_connections(url, "auth=true&limit=100000")
        held += sum(1 for c in connections if c.get("authorized_user") == key)
    return held


async def _caps_of(pool: Pool, host: EnrolledHost) -> list[HostConnectionsCapped]:
    records = await pool.store.read_stream(host_stream(host.host_id))
    caps = [r for r in records if r.type == "HostConnectionsCapped"]
    return [HostConnectionsCapped.model_validate(r.data) for r in caps]


async def _types_of(pool: Pool, host: EnrolledHost) -> list[str]:
    return [r.type for r in await pool.store.read_stream(host_stream(host.host_id))]


async def _until(
    predicate: Callable[[], Awaitable[bool]], what: str, pool: Pool, timeout: float = 60
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{pool.logs()}")
        await asyncio.sleep(0.2)


async def _open_as(pool: Pool, host: EnrolledHost, count: int) -> list[NATS]:
    """`count` connections with the host's own key, as a member's script would open them; none
    reconnects once the server closes it."""
    seed = tomllib.loads(host.credentials.read_text())["nats_seed"]
    clients: list[NATS] = []

    async def quiet(exc: Exception) -> None:
        pass

    for _ in range(count):
        clients.append(
            await connect_client(
                pool.nats.url.split(","),
                nkeys_seed_str=seed,
                inbox_prefix=inbox_prefix(host.host_id),
                allow_reconnect=False,
                error_cb=quiet,
            )
        )
    return clients


@pytest.mark.connection_caps(LIMIT, COOLDOWN_S)
# Silent past the cooldown without being lost: the capped host's allocations wait for it.
@pytest.mark.liveness(0.25, 6, 120.0)
async def test_a_host_opening_200_connections_is_shut_out_for_the_cooldown_and_the_other_host_is_served(
    pool: Pool, docker_engines: Any
) -> None:
    """Tried: with two hosts online, a script opens 200 NATS connections with host A's key;
    meanwhile a user asks the allocator for a container that fits on either host.
    Must hold: the registry records HostConnectionsCapped for A (200 or so connections, the
    limit) and every one of the script's connections is closed, A's hostd's too; A's status
    says why; B never goes unreachable and the allocation is placed on B; after the cooldown
    A's hostd (restarted during the cap, and still running: a cap is no revocation)
    reconnects, A is active again, and A's key holds its one connection."""
    a = await start_laptop(pool, docker_engines[0], "laptop-a")
    b = await start_laptop(pool, docker_engines[1], "laptop-b")
    assert _connections_of(pool, a) == 1
    token = await pool.add_user("ursula", allocations=5, cpus=100.0)

    hostile = await _open_as(pool, a, 200)
    try:

        async def capped() -> bool:
            return bool(await _caps_of(pool, a))

        await _until(capped, "A's connections capped", pool)
        [cap] = await _caps_of(pool, a)
        assert cap.limit == LIMIT
        assert cap.connections > LIMIT

        async def all_closed() -> bool:
            return all(not c.is_connected for c in hostile) and _connections_of(pool, a) == 0

        await _until(all_closed, "every connection of A's key closed", pool, timeout=30)
        # Its member restarts hostd during the cap: the new hostd is refused as the old one
        # was, and must not take that for a revocation either.
        assert a.process is not None
        a.process.kill()
        pool.start_hostd(a)
        rows = {h["host_id"]: h for h in (await pool.live_hosts())["hosts"]}
        assert rows[a.host_id]["connections_capped"]["connections"] == cap.connections
        assert rows[b.host_id]["connections_capped"] is None

        # While A is shut out, the pool serves B: a container that fits either is placed on B.
        # Asked once the allocator has folded the cap (the log holds it; under load the model
        # was a second behind, placed on A, and the allocation then waited there for A).
        await allocator_now(pool)
        body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                pool.api + "/v1/allocations", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            created: dict[str, Any] = await response.json()
        assert response.status in (200, 201, 202), created

        async def placed() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"{pool.api}/v1/allocations/{created['id']}", headers={"Authorization": f"Bearer {token}"}
                ) as response,
            ):
                got: dict[str, Any] = await response.json()
            return got.get("host_id") == b.host_id

        await _until(placed, "the allocation placed on B", pool, timeout=30)

        # After the cooldown A's hostd is back on its own.
        await pool.wait_for_host(a.host_id, "active", timeout=COOLDOWN_S + 60)

        async def one_connection() -> bool:
            return _connections_of(pool, a) == 1

        await _until(one_connection, "A's hostd reconnected with one connection", pool, timeout=30)
        assert a.process is not None
        assert a.process.running()
        assert not any(c.is_connected for c in hostile), "a closed connection of the script came back"
        assert "HostSuspected" not in await _types_of(pool, b)
    finally:
        for c in hostile:
            if not c.is_closed:
                await c.close()


#: The honest hostd's limit: lower than LIMIT (a hostd holds one connection), so that twice
#: as many restarts as it allows are fewer hostd starts, and a connection left behind by a
#: killed hostd is caught sooner.
HONEST_LIMIT = 3


@pytest.mark.connection_caps(HONEST_LIMIT, COOLDOWN_S)
async def test_an_honest_hostd_restarting_again_and_again_is_never_capped(
    pool: Pool, docker_engines: Any
) -> None:
    """Tried: a host's hostd killed (SIGKILL, as a crash) and started again twice as many
    times as the limit, each time once it holds its connection, then a few of the watch's looks.
    Must hold: no HostConnectionsCapped for the host, it is active, and its key holds the one
    connection of the last hostd: a connection ends with its process."""
    a = await start_laptop(pool, docker_engines[0], "laptop-a")

    async def connected() -> bool:
        return _connections_of(pool, a) == 1

    for _ in range(2 * HONEST_LIMIT):
        assert a.process is not None
        a.process.kill()
        pool.start_hostd(a)
        await _until(connected, "the restarted hostd connected", pool, timeout=60)
    await asyncio.sleep(3 * 2.0)  # a few of the registry's looks (every 2 s)
    assert await _caps_of(pool, a) == []
    await pool.wait_for_host(a.host_id, "active")
    assert _connections_of(pool, a) == 1


async def test_on_a_cluster_a_key_is_counted_over_every_node_and_cut_off_on_each(cluster_pool: Pool) -> None:
    """Tried: on a three-node NATS cluster, a host's key opens 6 connections to node 2 and 6 to
    node 3 (12 in all, none past 8 on one node).
    Must hold: the registry caps the host, counting over every node, and the connections on
    both nodes are closed: the registry reloads every node, not only the first."""
    pool = cluster_pool
    assert isinstance(pool.nats, NatsCluster)
    host = await pool.enroll("laptop-c")
    seed = tomllib.loads(host.credentials.read_text())["nats_seed"]

    async def quiet(exc: Exception) -> None:
        pass

    conns: list[NATS] = []
    for node in pool.nats.nodes[1:]:
        for _ in range(6):
            conns.append(
                await connect_client(
                    node.url,
                    nkeys_seed_str=seed,
                    inbox_prefix=inbox_prefix(host.host_id),
                    allow_reconnect=False,
                    error_cb=quiet,
                )
            )
    try:

        async def capped() -> bool:
            return bool(await _caps_of(pool, host))

        await _until(capped, "the host capped", pool)
        [cap] = await _caps_of(pool, host)
        assert cap.connections == 12

        async def all_closed() -> bool:
            return not any(c.is_connected for c in conns) and _connections_of(pool, host) == 0

        await _until(all_closed, "its connections closed on nodes 2 and 3", pool, timeout=30)
    finally:
        for c in conns:
            if not c.is_closed:
                await c.close()
