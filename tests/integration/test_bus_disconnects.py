"""A lost NATS server is a warning; a client's own close is not (real nats-server).

nats-py calls the disconnected callback on `close()` too. Every short command (`potluck host
status`, `potluck alloc ...` through the bus) and every service stopping then printed
`bus.disconnected` as a warning, which tells an operator a server went away when none did.
"""

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from structlog.testing import LogCapture

from potluck.events import connection
from potluck.events.connection import connect_bus
from potluck.localstack import NatsServer
from tests.helpers import capture_module_log


def disconnect_warnings(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "bus.disconnected" and e["log_level"] == "warning"]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> LogCapture:
    """What connection.py logs, at every level."""
    return capture_module_log(connection, monkeypatch)


async def test_closing_a_client_is_not_a_lost_server(tmp_path: Path, captured: LogCapture) -> None:
    """Tried: a client closes its own connection, then another loses its server (SIGKILL).
    Must hold: the close logs no `bus.disconnected` warning (only `bus.closed`, at debug); the
    lost server logs exactly that warning, naming the client."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        closing = await connect_bus(server.url, name="closing")
        await closing.close()
        assert disconnect_warnings(captured.entries) == []
        assert [e["log_level"] for e in captured.entries if e["event"] == "bus.closed"] == ["debug"]

        captured.entries.clear()
        losing = await connect_bus(server.url, name="losing")
        try:
            server.kill()
            for _ in range(100):
                if disconnect_warnings(captured.entries):
                    break
                await asyncio.sleep(0.05)
        finally:
            await losing.close()
        assert [e["client"] for e in disconnect_warnings(captured.entries)] == ["losing"]
    finally:
        server.stop()


async def test_a_flood_into_a_slow_subscription_is_logged_sparingly(
    tmp_path: Path, captured: LogCapture
) -> None:
    """Tried: 25,000 messages published, as a sender in a loop does, into a subscription whose
    handler is slow and whose pending queue holds 100, so that nats-py drops nearly all of
    them and reports each drop as an error. Must hold: that is a few `bus.slow_consumer` lines
    (the first drop, then one per SLOW_CONSUMER_LOGGED_EVERY), each naming the subject and how
    many were dropped so far, and no `bus.error` line per drop (there were hundreds of
    thousands a minute in a pool's allocator log)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        receiver = await connect_bus(server.url, name="receiver")
        sender = await connect_bus(server.url, name="sender")

        async def slow(_msg: object) -> None:
            await asyncio.sleep(0.01)

        try:
            await receiver.subscribe("flood.here", cb=slow, pending_msgs_limit=100)
            await receiver.flush()
            for _ in range(25):
                for _ in range(1000):
                    await sender.publish("flood.here", b"x")
                await sender.flush()
            await asyncio.sleep(0.5)
        finally:
            await sender.close()
            await receiver.close()
    finally:
        server.stop()
    slow_lines = [e for e in captured.entries if e["event"] == "bus.slow_consumer"]
    errors = [e for e in captured.entries if e["event"] == "bus.error"]
    assert errors == [], errors[:3]
    assert 1 <= len(slow_lines) <= 25_000 // connection.SLOW_CONSUMER_LOGGED_EVERY + 1, len(slow_lines)
    assert slow_lines[0]["subject"] == "flood.here"
    assert slow_lines[0]["dropped"] == 1
    assert all(e["client"] == "receiver" for e in slow_lines)


async def test_a_close_nobody_asked_for_is_an_error(nats_server: NatsServer, captured: LogCapture) -> None:
    """Tried: nats-py closes a connect_bus connection by itself, as it does when it gives a
    connection up for good (its internal `_close(CLOSED)`, the path it took on an -ERR before
    SturdyClient kept those connections). Before: the close was logged as `bus.closed` at
    debug, like a close of our own, and the service went deaf without a word. Must hold: it is
    logged as `bus.closed_for_good`, an error that names the client and says to restart it."""
    given_up = await connect_bus(nats_server.url, name="given-up")
    await given_up._close(Client.CLOSED, do_cbs=True)
    said = [e for e in captured.entries if e["event"].startswith("bus.closed")]
    assert [(e["event"], e["log_level"], e["client"]) for e in said] == [
        ("bus.closed_for_good", "error", "given-up")
    ]
    assert "restart" in said[0]["hint"]


async def test_draining_a_client_is_not_a_close_for_good(
    nats_server: NatsServer, captured: LogCapture
) -> None:
    """Tried: a connect_bus client with a subscription drains its connection, as every central
    service does when it stops (bootstrap.serve). Before: nats-py's drain() closes through its
    own `_close(CLOSED)`, not close(), so every SIGTERM or `potluck down` logged
    `bus.closed_for_good`, an error telling the operator to restart a service that was merely
    stopping. Must hold: the drain closes the connection and logs only `bus.closed`, at debug."""
    draining = await connect_bus(nats_server.url, name="draining")
    await draining.subscribe("some.subject")
    await draining.drain()
    assert draining.is_closed
    said = [(e["event"], e["log_level"]) for e in captured.entries if e["event"].startswith("bus.")]
    assert said == [("bus.closed", "debug")], said


async def test_a_server_away_for_long_is_logged_sparingly(
    nats_server: NatsServer, captured: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: a connect_bus client's nats-server is killed and stays away while the client
    tries again (nats-py: twice a second, for ever), then comes back. Before: every attempt
    was a `bus.error` warning, 7,200 lines an hour from each service and each member's hostd
    for as long as the pool's NATS was down. Must hold: besides the lost connection's own
    error, the failed attempts are logged for the first and then once per
    UNREACHABLE_LOGGED_EVERY (5 here), each line saying how many
    attempts failed so far; the client reconnects when the server is back, saying after how
    many failed attempts; and a second outage is logged from its first attempt again."""
    monkeypatch.setattr(connection, "UNREACHABLE_LOGGED_EVERY", 5)
    client = await connect_bus(nats_server.url, name="waiting")

    def errors() -> list[MutableMapping[str, Any]]:
        return [e for e in captured.entries if e["event"] == "bus.error"]

    def reconnects() -> list[MutableMapping[str, Any]]:
        return [e for e in captured.entries if e["event"] == "bus.reconnected"]

    async def until(done: Any, what: str) -> None:
        for _ in range(1200):  # a bound on a hang, not a timed assertion
            if done():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {what}: {captured.entries[-5:]}")

    try:
        for outage in (1, 2):
            captured.entries.clear()
            nats_server.kill()
            # At least 12 attempts failed: the 11th is logged, or (unbounded) each was.
            await until(
                lambda: any(e.get("failed_attempts", 0) >= 11 for e in errors()) or len(errors()) >= 12,
                f"eleven failed attempts in outage {outage}",
            )
            said = errors()
            # The lost connection's own error (its end of stream) is said as before, once.
            assert [e.get("failed_attempts") for e in said][:4] == [None, 1, 6, 11], said[:5]
            assert len(said) <= 4, len(said)
            assert all(e["client"] == "waiting" for e in said)
            nats_server.start()
            await until(reconnects, f"reconnect after outage {outage}")
            assert reconnects()[0]["failed_attempts"] >= 11
    finally:
        await client.close()
