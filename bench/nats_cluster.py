"""`ops/bench nats_cluster [--rounds N]`: failover_s, from killing one node of a three-node NATS
cluster to placements and appends flowing again.

A pool (registry, allocator with its relay, one hostd on a private Docker engine) runs on a
three-node cluster on loopback, every JetStream stream kept on all three nodes. Each round
kills the node leading the events stream (the one whose loss stops most), then asks for
allocations through the API until one is placed and its AllocationPlaced event is in
JetStream (published by the relay through the stream's new leader): that moment, less the
kill's, is the round's failover. The node comes back before the next round. Printed:

    failover_s   the worst round (target <= 5 s, nothing lost), with each round's figure

`failover_s` (the function) takes any running pool on a NatsCluster, for bench/scale.py.
"""

import argparse
import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import nats
from nats.js import JetStreamContext

from bench.harness import BENCH_CHANGE_RATE, BenchServers, bench_servers, emit, say, wait_active_host
from bench.pool import BENCH_LIVENESS, UNBOUNDED_QUOTA, _start_engine
from potluck.contracts.allocation_events import alloc_stream
from potluck.events import EVENTS_STREAM, EventStore
from potluck.events.bus import H_MSG_ID, event_subject
from potluck.localpool import LocalPool
from potluck.localstack import NatsCluster
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG

#: The probe: as small as the pool places, and it stays (a round's probes are few).
PROBE: dict[str, Any] = {
    "cpus": 0.05,
    "memory": "16M",
    "disk": "16M",
    "image": DEFAULT_TAG,
    "command": ["sleep", "3600"],
}


async def events_leader(js: JetStreamContext, cluster: NatsCluster) -> int:
    """The index in `cluster.nodes` of the node leading the events stream."""
    info = await js.stream_info(EVENTS_STREAM)
    if info.cluster is None or info.cluster.leader is None:
        raise RuntimeError(f"{EVENTS_STREAM} has no leader: is it replicated on the cluster?")
    return int(info.cluster.leader.rsplit("-", 1)[1]) - 1  # NatsCluster names nodes NAME-<n>


async def failover_s(
    cluster: NatsCluster,
    store: EventStore,
    js: JetStreamContext,
    http: aiohttp.ClientSession,
    api: str,
    headers: dict[str, str],
    *,
    timeout: float = 120,
) -> float:
    """Kill the events stream's leader node; seconds until an allocation asked for after the kill
    is placed and its placement is in JetStream. `js` must reach the cluster through any node."""
    for _ in range(100):  # a stream made a moment ago may not answer yet
        with contextlib.suppress(Exception):
            node = await events_leader(js, cluster)
            break
        await asyncio.sleep(0.2)
    else:
        node = await events_leader(js, cluster)  # its error, then
    killed = time.monotonic()
    cluster.kill(node)
    deadline = killed + timeout
    electing = asyncio.create_task(_new_leader(js, cluster, node, killed, deadline))
    try:
        return await _flowing_again(store, js, http, api, headers, killed, deadline, timeout)
    finally:
        electing.cancel()


async def _new_leader(
    js: JetStreamContext, cluster: NatsCluster, old: int, killed: float, deadline: float
) -> None:
    """Says when the events stream has a leader again: what bounds the failover (the raft election)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await events_leader(js, cluster) != old:
                say(f"{EVENTS_STREAM} has a new leader {time.monotonic() - killed:.2f} s after the kill")
                return
        await asyncio.sleep(0.05)


async def _flowing_again(
    store: EventStore,
    js: JetStreamContext,
    http: aiohttp.ClientSession,
    api: str,
    headers: dict[str, str],
    killed: float,
    deadline: float,
    timeout: float,
) -> float:
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(f"{api}/v1/allocations", json=PROBE, headers=headers) as r:
                created = await r.json()
            if r.status == 201 and await _published(store, js, str(created["id"]), deadline):
                return time.monotonic() - killed
        await asyncio.sleep(0.05)
    raise RuntimeError(f"placements and appends did not flow again within {timeout:.0f} s of the kill")


async def _published(store: EventStore, js: JetStreamContext, alloc_id: str, deadline: float) -> bool:
    """Until `deadline`: is the allocation's AllocationPlaced in the events stream?"""
    placed = [e for e in await store.read_stream(alloc_stream(alloc_id)) if e.type == "AllocationPlaced"]
    if not placed:
        return False
    subject = event_subject(placed[0])
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # no leader yet, a timeout: ask again
            msg = await js.get_last_msg(EVENTS_STREAM, subject)
            if (msg.headers or {}).get(H_MSG_ID) == placed[0].event_id_text:
                return True
        await asyncio.sleep(0.05)
    return False


async def run(servers: BenchServers, rounds: int) -> None:
    engine = DockerEngine(servers.workdir / "docker0")
    say("starting a private Docker engine")
    await asyncio.to_thread(_start_engine, engine)
    pool: LocalPool | None = None
    try:
        pool = await LocalPool.create(
            servers.workdir / "pool",
            await servers.fresh_database("nats_cluster"),
            nats_nodes=3,
            stream_replicas=3,
            liveness=BENCH_LIVENESS,
            change_rate=BENCH_CHANGE_RATE,
        )
        cluster = pool.nats
        assert isinstance(cluster, NatsCluster)
        pool.start_registry()
        pool.start_allocator()
        host = await pool.enroll("bench-host-0")
        pool.write_config(host, engine.url)
        pool.start_hostd(host)
        await pool.wait_api()
        headers = {"Authorization": f"Bearer {await pool.add_user('bench', **UNBOUNDED_QUOTA)}"}

        async def quiet(exc: Exception) -> None:  # a killed node's refused reconnects are expected
            return None

        nc = await nats.connect(
            cluster.url.split(","), nkeys_seed_str=pool.services_seed, error_cb=quiet, reconnect_time_wait=0.1
        )
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                await wait_active_host(http, pool.api, headers)
                figures = []
                for i in range(rounds):
                    # Short API timeouts: a probe asked while the stream has no leader gets no answer,
                    # and with the default 5 s the measurement itself would lag the failover.
                    probe = nc.jetstream(timeout=0.5)
                    seconds = await failover_s(cluster, pool.store, probe, http, pool.api, headers)
                    say(f"round {i + 1}: {seconds:.2f} s")
                    figures.append(seconds)
                    for node in cluster.nodes:
                        node.start()  # the killed one again; the others are running
                    await asyncio.to_thread(cluster.wait_ready)
        finally:
            await nc.close()
        emit("nats_cluster", "failover_s", max(figures), "s", rounds=[round(f, 2) for f in figures])
    finally:
        if pool is not None:
            await pool.close()
        with contextlib.suppress(Exception):
            engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="ops/bench nats_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="nodes killed, one after another")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directory (logs)")
    args = parser.parse_args()
    with bench_servers(keep=args.keep) as servers:
        asyncio.run(run(servers, args.rounds))


if __name__ == "__main__":
    main()
