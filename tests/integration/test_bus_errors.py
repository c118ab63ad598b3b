"""A -ERR from nats-server as the services' connections (connect_bus, SturdyClient) meet it:
reported, and the connection kept. A real nats-server with the pool's client limits."""

import asyncio

from nats.aio.msg import Msg

from potluck.events.connection import connect_bus
from potluck.localstack import NatsServer
from tests.fixtures.servers import SERVICE_SEED

#: Subscriptions one connection may hold on the pool's servers (NATS_CLIENT_LIMITS).
MAX_SUBSCRIPTIONS = 1024


async def test_a_subscription_the_server_refuses_leaves_the_connection_working(
    guarded_nats: NatsServer,
) -> None:
    """Tried: a service connection subscribes once more than the server allows, so nats-server
    answers -ERR 'maximum subscriptions exceeded' and keeps the connection. Before: nats-py
    closed the connection for good on that -ERR (no reconnect), and the service heard nothing
    more until restarted. Must hold: the error is reported to the error callback, the
    connection stays open, and a message another connection publishes afterwards to one of the
    subscriptions the server took arrives."""
    service = await connect_bus(guarded_nats.url, name="service", seed=SERVICE_SEED)
    sender = await connect_bus(guarded_nats.url, name="sender", seed=SERVICE_SEED)
    landed: asyncio.Queue[Msg] = asyncio.Queue()
    try:
        await service.subscribe("errs.first", cb=landed.put)
        for i in range(MAX_SUBSCRIPTIONS):
            await service.subscribe(f"errs.more.{i}")
        await service.flush()
        await service.flush()  # the -ERR was read before this PONG
        assert "maximum subscriptions exceeded" in str(service.last_error)
        assert not service.is_closed
        await sender.publish("errs.first", b"still listening")
        await sender.flush()
        async with asyncio.timeout(5):
            msg = await landed.get()
        assert msg.data == b"still listening"
        assert service.is_connected
    finally:
        await service.close()
        await sender.close()
