"""A lost NATS server is a warning; a client's own close is not (real nats-server).

nats-py calls the disconnected callback on `close()` too. Every short command (`potluck host
status`, `potluck alloc ...` through the bus) and every service stopping then printed
`bus.disconnected` as a warning, which tells an operator a server went away when none did.
"""

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from potluck.events.connection import connect_bus
from potluck.localstack import NatsServer


def disconnect_warnings(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "bus.disconnected" and e["log_level"] == "warning"]


async def test_closing_a_client_is_not_a_lost_server(tmp_path: Path) -> None:
    """Tried: a client closes its own connection, then another loses its server (SIGKILL).
    Must hold: the close logs no `bus.disconnected` warning; the lost server logs exactly that
    warning, naming the client."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        with capture_logs() as logs:
            closing = await connect_bus(server.url, name="closing")
            await closing.close()
        assert disconnect_warnings(logs) == []
        assert any(e["event"] == "bus.closed" and e["client"] == "closing" for e in logs)

        with capture_logs() as logs:
            losing = await connect_bus(server.url, name="losing")
            try:
                server.kill()
                for _ in range(100):
                    if disconnect_warnings(logs):
                        break
                    await asyncio.sleep(0.05)
            finally:
                await losing.close()
        assert [e["client"] for e in disconnect_warnings(logs)] == ["losing"]
    finally:
        server.stop()
