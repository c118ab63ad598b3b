"""flush() as the services rely on it: once it returns, the server has what was written before
it. A real nats-server; the clients are the services' own (connect_bus, SturdyClient)."""

import asyncio

from nats.aio.msg import Msg

from potluck.events.connection import connect_bus
from potluck.localstack import NatsServer
from tests.helpers import freeze_process

ROUNDS = 200


async def test_a_subscription_flushed_gets_what_another_connection_publishes_next(
    nats_server: NatsServer,
) -> None:
    """Tried: 200 rounds of: subscribe, flush, then another connection publishes once and
    flushes; the subscription is dropped at the end of each round. Before: nats-py wrote the
    PING of flush() ahead of the SUB still queued for its flusher, the PONG came back before the
    server had the subscription, and 37 of 200 messages were never delivered. Must hold: every
    round's message arrives, and the server says it delivered all 200."""
    receiver = await connect_bus(nats_server.url, name="receiver")
    sender = await connect_bus(nats_server.url, name="sender")
    missed: list[int] = []
    try:
        for round_ in range(ROUNDS):
            landed: asyncio.Queue[Msg] = asyncio.Queue()
            sub = await receiver.subscribe("barrier.*", cb=landed.put)
            await receiver.flush()
            await sender.publish("barrier.round", str(round_).encode())
            await sender.flush()
            try:
                async with asyncio.timeout(5):
                    msg = await landed.get()
                assert msg.data == str(round_).encode()
            except TimeoutError:
                missed.append(round_)
            await sub.unsubscribe()
        assert missed == [], f"lost the message of rounds {missed}"
        assert receiver.stats["in_msgs"] == ROUNDS
    finally:
        await receiver.close()
        await sender.close()


async def test_what_was_published_before_a_flush_has_reached_the_server(nats_server: NatsServer) -> None:
    """Tried: a connection publishes 200 messages one at a time, each followed by flush(), while
    another connection already subscribed asks the server for a round trip of its own after
    each. Before: the publisher's PING overtook its PUB, and its flush returned before the server
    had the message. Must hold: after each pair of flushes the watcher has read that message
    (the server passed it on before answering the watcher), so a service that flushes before
    closing or before starting a clock has really sent first."""
    watcher = await connect_bus(nats_server.url, name="watcher")
    publisher = await connect_bus(nats_server.url, name="publisher")
    behind: list[int] = []
    try:
        sub = await watcher.subscribe("barrier.out")
        await watcher.flush()
        for round_ in range(ROUNDS):
            await publisher.publish("barrier.out", str(round_).encode())
            await publisher.flush()
            await watcher.flush()
            if sub.delivered != round_ + 1:
                behind.append(round_)
        assert behind == [], f"the watcher had not read the message of rounds {behind} yet"
    finally:
        await watcher.close()
        await publisher.close()


async def test_a_flush_given_up_before_its_pong_leaves_the_connection_reading(
    nats_server: NatsServer,
) -> None:
    """Tried: 20 rounds of: a connection starts a flush() and cancels it once its PING is out
    (as an `asyncio.timeout` around it does), then another connection publishes to its
    subscription. Before: the PONG of the cancelled flush hit nats-py's read loop with
    InvalidStateError, the loop ended, and the connection, still "connected", read nothing
    more: the first round's message never arrived. Must hold: every round's message arrives,
    and the connection's reading task is still running."""
    receiver = await connect_bus(nats_server.url, name="receiver")
    sender = await connect_bus(nats_server.url, name="sender")
    landed: asyncio.Queue[Msg] = asyncio.Queue()
    missed: list[int] = []
    try:
        await receiver.subscribe("given_up", cb=landed.put)
        await receiver.flush()
        for round_ in range(20):
            flushing = asyncio.ensure_future(receiver.flush())
            await asyncio.sleep(0)  # its PING is written
            flushing.cancel()
            await asyncio.gather(flushing, return_exceptions=True)
            await sender.publish("given_up", str(round_).encode())
            await sender.flush()
            try:
                await receiver.flush(timeout=5)  # the cancelled flush's PONG is read before this one's
                async with asyncio.timeout(5):
                    msg = await landed.get()
                assert msg.data == str(round_).encode()
            except TimeoutError:
                missed.append(round_)
                break
        assert missed == [], f"the receiver went deaf in round {missed}"
        assert receiver._reading_task is not None
        assert not receiver._reading_task.done()
    finally:
        await receiver.close()
        await sender.close()


async def test_a_flush_made_while_reconnecting_waits_for_the_server(nats_server: NatsServer) -> None:
    """Tried: the server stops under a connection; while the connection is away it subscribes
    and calls flush(); the server starts again, and once that flush has returned another
    connection publishes once. Before: nats-py's flush() returned at once while reconnecting,
    with nothing sent, and the message was published before the subscription was back. Must
    hold: the flush had not returned while the server was away, and the message arrives."""
    receiver = await connect_bus(nats_server.url, name="receiver")
    landed: asyncio.Queue[Msg] = asyncio.Queue()
    try:
        nats_server.stop()
        while receiver.is_connected:
            await asyncio.sleep(0.05)
        await receiver.subscribe("while_away", cb=landed.put)
        flushing = asyncio.ensure_future(receiver.flush(timeout=60))
        await asyncio.sleep(0.5)
        assert not flushing.done(), "flush() returned while no server was there"
        nats_server.start()
        await flushing
        sender = await connect_bus(nats_server.url, name="sender")
        try:
            await sender.publish("while_away", b"after the flush")
            await sender.flush()
            async with asyncio.timeout(5):
                msg = await landed.get()
            assert msg.data == b"after the flush"
        finally:
            await sender.close()
    finally:
        await receiver.close()


async def test_a_flush_whose_connection_is_lost_is_answered_on_the_next(nats_server: NatsServer) -> None:
    """Tried: the server is frozen (SIGSTOP) so a flush's PING gets no PONG, then killed and
    started again on its port; the connection reconnects. Before: the PONG's place was thrown
    away with the old connection and the flush waited out its whole timeout and raised
    FlushTimeoutError. Must hold: the flush returns (its PING sent again on the new
    connection), and the connection has reconnected once."""
    client = await connect_bus(nats_server.url, name="flusher")
    try:
        pid = nats_server.pid
        assert pid is not None
        freeze_process(pid)
        flushing = asyncio.ensure_future(client.flush(timeout=30))
        await asyncio.sleep(0.2)  # its PING is out, unanswered
        nats_server.kill()
        nats_server.start()
        await flushing
        assert client.stats["reconnects"] == 1
    finally:
        await client.close()
