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
