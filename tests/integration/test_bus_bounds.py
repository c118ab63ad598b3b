"""What one host's NATS credentials can cost the shared server: a real nats-server started with
the configuration Potluck generates (NatsServer with authorization) and the users file the
registry renders, the host connecting with its own key and inbox as hostd does."""

import asyncio

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from potluck.contracts.messages import Heartbeat
from potluck.contracts.subjects import HEARTBEAT, host_subject, inbox_prefix
from potluck.localstack import NatsServer
from potluck.localstack.nats_server import NATS_CLIENT_LIMITS
from potluck.registry.nats_auth import (
    KeyPair,
    new_user_key,
    public_key_of,
    render_authorization,
    write_authorization,
)
from tests.fixtures.servers import SERVICE_SEED, connect_client, monitored_connections

#: The bound NATS_CLIENT_LIMITS sets, read back from the text the server is given.
MAX_SUBSCRIPTIONS = int(NATS_CLIENT_LIMITS.split("max_subscriptions:")[1].split()[0])


def admit_hosts(server: NatsServer, *host_ids: str) -> dict[str, KeyPair]:
    keys = {host_id: new_user_key() for host_id in host_ids}
    hosts = [(host_id, key.public) for host_id, key in keys.items()]
    write_authorization(server.auth_file, render_authorization([public_key_of(SERVICE_SEED)], hosts))
    server.reload()
    return keys


async def connect_as_host(server: NatsServer, host_id: str, key: KeyPair, errors: list[str]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await connect_client(
        server.url,
        nkeys_seed_str=key.seed,
        inbox_prefix=inbox_prefix(host_id),
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=5,
    )


async def connect_with_retry(server: NatsServer, host_id: str, key: KeyPair, errors: list[str]) -> NATS:
    """nats-server applies a reload on its own time: ask again until the new key is admitted."""
    for _ in range(100):
        try:
            return await connect_as_host(server, host_id, key, errors)
        except (nats.errors.Error, OSError):
            await asyncio.sleep(0.1)
    raise AssertionError(f"nats-server never admitted {host_id}'s key: {server.log_tail()}")


async def beat_lands(services: NATS, host: NATS, host_id: str) -> bool:
    """Does a heartbeat `host` publishes on its own subject reach the services?"""
    landed: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await services.subscribe(f"{HEARTBEAT}.*", cb=landed.put)
    await services.flush()
    try:
        beat = Heartbeat(hostd_version="t").model_dump_json().encode()
        await host.publish(host_subject(HEARTBEAT, host_id), beat)
        await host.flush()
        async with asyncio.timeout(10):
            msg = await landed.get()
        return msg.subject == host_subject(HEARTBEAT, host_id)
    finally:
        await sub.unsubscribe()


async def test_a_host_subscribing_in_a_loop_is_held_at_the_bound(guarded_nats: NatsServer) -> None:
    """Tried: host A, with its own key, subscribes to its own reply inbox (the one subject it
    may) 200 times past MAX_SUBSCRIPTIONS on one connection. Before: nats-server kept every
    subscription (some 1.6 KB each; a loop of a few million takes the machine's memory and the
    pool's bus with it). Must hold: the server refuses A past the bound ("maximum subscriptions
    exceeded") and holds no more than the bound for A's connection, which stays open (the
    server keeps it; SturdyClient no longer closes it for good on that -ERR); B's heartbeat
    still reaches the services, and A's own beat lands on that same connection."""
    keys = admit_hosts(guarded_nats, "host-a", "host-b")
    services = await connect_client(guarded_nats.url, nkeys_seed_str=SERVICE_SEED)
    a_errors: list[str] = []
    as_a = await connect_with_retry(guarded_nats, "host-a", keys["host-a"], a_errors)
    as_b = await connect_with_retry(guarded_nats, "host-b", keys["host-b"], [])
    try:
        for i in range(MAX_SUBSCRIPTIONS + 200):
            await as_a.subscribe(f"{inbox_prefix('host-a')}.loop.{i}")
        await as_a.flush()
        await as_a.flush()  # every -ERR was read before this PONG
        assert any("maximum subscriptions exceeded" in e.lower() for e in a_errors), a_errors
        assert subscriptions_held(guarded_nats, "host-a") == MAX_SUBSCRIPTIONS
        assert not as_a.is_closed
        assert guarded_nats.running()
        assert await beat_lands(services, as_b, "host-b")
        assert await beat_lands(services, as_a, "host-a")
    finally:
        for client in (as_a, as_b, services):
            await client.close()


def subscriptions_held(server: NatsServer, name_part: str) -> int:
    """What nats-server's monitoring endpoint counts for the one connection whose inbox
    subscriptions name `name_part`."""
    connections = monitored_connections(server.monitor_urls[0], "subs=1&limit=1000")
    held = [
        c["subscriptions"]
        for c in connections
        if any(name_part in s for s in c.get("subscriptions_list", []))
    ]
    assert len(held) == 1, connections
    return int(held[0])
