"""A central service whose NATS connection is closed for good ends, for its supervisor to start
it again; one stopped while its NATS is away stops cleanly (real nats-server and Postgres, the
services' own bootstrap.serve)."""

import asyncio
import os
import signal

import pytest
from nats.aio.client import Client
from nats.aio.client import Client as NATS

from potluck.bootstrap import Backends, serve
from potluck.events import EventStore
from potluck.localstack import NatsServer


async def test_a_service_whose_bus_is_closed_for_good_exits_non_zero(
    nats_server: NatsServer, database_url: str
) -> None:
    """Tried: a service started by bootstrap.serve (as the registry, the allocator and the
    gateway are) has its NATS connection closed by nats-py itself (its internal
    `_close(CLOSED)`, the way it gives a connection up for good: it never reconnects). Before:
    `bus.closed_for_good` was logged and the service went on running, deaf to the bus (no
    report, no request, no relay) while its process and /readyz looked healthy, until someone
    read the log. Must hold: serve ends with a SystemExit whose message says the connection
    was closed for good and that the service ends to be started again: a non-zero exit, which
    `potluck up`'s supervisor, systemd and compose restart."""
    started = asyncio.Event()

    async def body(_store: EventStore, nc: NATS) -> None:
        started.set()
        await nc._close(Client.CLOSED, do_cbs=True)
        await asyncio.Event().wait()  # a service's body runs until it is stopped

    backends = Backends(database_url=database_url, nats_url=nats_server.url, relay=False)
    with pytest.raises(SystemExit) as ended:
        async with asyncio.timeout(60):  # a bound on a hang, not a timed assertion
            await serve("deafened", backends, body)
    assert started.is_set()
    said = str(ended.value.code)
    assert said.startswith("error: "), said
    assert "closed for good" in said, said
    assert "deafened ends" in said, said


async def test_a_service_stopped_while_its_nats_is_away_stops_cleanly(
    nats_server: NatsServer, database_url: str
) -> None:
    """Tried: a service started by bootstrap.serve loses its nats-server (killed, so its client
    is reconnecting) and is then sent SIGTERM, as `potluck down` or systemd do. Before: its
    stop drained the connection, nats-py's drain() raised ConnectionReconnectingError, and the
    service ended with a traceback instead of stopping. Must hold: serve returns, and the
    connection is closed."""
    clients: list[NATS] = []

    async def body(_store: EventStore, nc: NATS) -> None:
        clients.append(nc)
        nats_server.kill()
        while nc.is_connected:
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler takes it
        await asyncio.Event().wait()

    backends = Backends(database_url=database_url, nats_url=nats_server.url, relay=False)
    async with asyncio.timeout(60):  # a bound on a hang, not a timed assertion
        await serve("stopping", backends, body)
    [nc] = clients
    assert nc.is_closed
