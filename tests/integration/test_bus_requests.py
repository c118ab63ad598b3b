"""request() as the services use it (connect_bus, SturdyClient) while the server is away: a
real nats-server, stopped under a connected client."""

import asyncio

import nats.errors

from potluck.events.connection import connect_bus
from potluck.localstack import NatsServer

#: Requests sent while the server is away, each big enough that the outbound buffer (2 MiB)
#: fills part way through.
REQUESTS = 300
PAYLOAD = b"y" * 20_000


async def test_requests_refused_while_reconnecting_leave_nothing_behind(nats_server: NatsServer) -> None:
    """Tried: a connected client's server stops; the client, reconnecting, is asked for 300
    requests of 20 KB, so its outbound buffer fills and later requests are refused at once
    (OutboundBufferLimitError). Before: each refused request left its answer's future in the
    connection's response map for good (196 of 300 here), a leak on every tick of an outage.
    Must hold: some requests were refused that way, and once all have ended the response map
    holds nothing."""
    nc = await connect_bus(nats_server.url, name="asker")
    try:
        nats_server.stop()
        while nc.is_connected:
            await asyncio.sleep(0.05)
        refused = 0
        for _ in range(REQUESTS):
            try:
                await nc.request("nobody.listens", PAYLOAD, timeout=0.01)
            except nats.errors.OutboundBufferLimitError:
                refused += 1
            except nats.errors.TimeoutError:
                pass
        assert refused > 0
        assert nc._resp_map == {}
    finally:
        await nc.close()


async def test_closing_while_reconnecting_closes(nats_server: NatsServer) -> None:
    """Tried: a connected client's server stops; the client, reconnecting, publishes (the
    message waits in its outbound buffer) and is closed. Before: close() wrote the buffer to
    the lost socket and raised ConnectionResetError half way, leaving the rest of the close
    undone. Must hold: close() returns and the client is closed."""
    nc = await connect_bus(nats_server.url, name="closer")
    nats_server.stop()
    while nc.is_connected:
        await asyncio.sleep(0.05)
    await nc.publish("nobody.listens", b"never sent")
    await nc.close()
    assert nc.is_closed
