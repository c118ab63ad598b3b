"""Connecting to the bus the way every Potluck process should."""

from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS

log = structlog.get_logger(__name__)


async def connect_bus(
    url: str,
    *,
    name: str,
    seed: str | None = None,
    inbox_prefix: str | None = None,
    connect_timeout: float = 5.0,
    first_attempts: int = 3,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """A NATS client that reconnects forever once connected.

    `seed` is the client's nkey seed (its identity); `inbox_prefix` must be
    the one its permissions allow (hosts have their own). `on_reconnect` runs
    after every reconnect: a place to re-send state the server may have lost.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("bus.error", client=name, error=str(exc))

    async def on_disconnected() -> None:
        log.warning("bus.disconnected", client=name)

    async def on_reconnected() -> None:
        log.info("bus.reconnected", client=name)
        if on_reconnect is not None:
            await on_reconnect()

    options: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    if seed is not None:
        options["nkeys_seed_str"] = seed
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    attempt = 0
    while True:
        attempt += 1
        try:
            return await nats.connect(url, **options)
        except (OSError, nats.errors.NoServersError, TimeoutError) as exc:
            if attempt >= first_attempts:
                raise ConnectionError(
                    f"cannot reach NATS at {url} ({exc!r}); is nats-server running there?"
                ) from exc
