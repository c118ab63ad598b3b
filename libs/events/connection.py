"""Connecting to the bus the way every Potluck process should."""

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from potluck.events.sturdy_client import SturdyClient
from potluck.kernel.nats_urls import nats_servers

log = structlog.get_logger(__name__)

#: A subscription that drops messages as a slow consumer is logged for the first and then once
#: per this many.
SLOW_CONSUMER_LOGGED_EVERY = 10_000
#: While NATS cannot be reached, a failed attempt to connect is logged for the first and then
#: once per this many (nats-py tries twice a second: about once a minute).
UNREACHABLE_LOGGED_EVERY = 120


class IdentityRefused(ConnectionError):
    """NATS refused this client's key again and again (Authorization Violation): the key left
    the server's users (a host revoked or gone), or it was never there."""


def is_authorization_refusal(exc: BaseException) -> bool:
    """Did the server refuse who we are? nats-py reports it as a plain error with the server's words."""
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


async def connect_bus(
    url: str,
    *,
    name: str,
    seed: str | None = None,
    inbox_prefix: str | None = None,
    connect_timeout: float = 5.0,
    first_attempts: int = 3,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    refused_after: int | None = None,
    on_refused: Callable[[], Awaitable[None]] | None = None,
    excused: Callable[[], str | None] | None = None,
    on_closed_for_good: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """A NATS client that reconnects forever once connected.

    `url` is one server or a cluster's nodes, comma-separated (see `nats_servers`): the
    client connects to any of them and, when its node goes away, reconnects to another.

    `seed` is the client's nkey seed (its identity); `inbox_prefix` must be
    the one its permissions allow (hosts have their own). `on_reconnect` runs
    after every reconnect: a place to re-send state the server may have lost.

    With `refused_after`, a server that refuses the key that many times in a row
    (each attempt is refused at once, so this takes about as many half seconds) is
    taken at its word: connecting raises IdentityRefused, and once connected
    `on_refused` runs (once), since reconnecting would go on forever. While `excused` gives a
    reason (the key is shut out for a while, not for good: the registry capped its
    connections), refusals are not counted: the client goes on reconnecting.

    `on_closed_for_good` runs once nats-py has closed the connection by itself (logged as
    `bus.closed_for_good`): it never reconnects, so the process is deaf to the bus from then
    on and should end, for its supervisor to start it again.
    """
    refusals = 0
    #: Attempts to connect that failed since the connection was lost (or first tried).
    failed_attempts = 0
    refused = asyncio.Event()
    client: NATS | None = None
    #: Messages dropped per subscription as a slow consumer, since the connection was made.
    dropped: Counter[int] = Counter()

    async def on_error(exc: Exception) -> None:
        nonlocal refusals, failed_attempts
        if isinstance(exc, nats.errors.SlowConsumerError):
            # nats-py reports every message dropped: a sender in a loop (a host whose member
            # controls it) would have it write a line for each, hundreds of thousands a minute.
            dropped[exc.sid] += 1
            if dropped[exc.sid] % SLOW_CONSUMER_LOGGED_EVERY == 1:
                log.warning(
                    "bus.slow_consumer",
                    client=name,
                    subject=exc.subject[:200],
                    dropped=dropped[exc.sid],
                    hint="messages came faster than this subscription handled them and were dropped; "
                    f"one line per {SLOW_CONSUMER_LOGGED_EVERY}: a sender in a loop?",
                )
            return
        refusal = is_authorization_refusal(exc)
        if client is not None and not client.is_connected and not client.is_closed and not refusal:
            # NATS away: nats-py tries again every half second, for as long as it takes. A line
            # each was 7,200 an hour from every service and every member's hostd.
            failed_attempts += 1
            if failed_attempts % UNREACHABLE_LOGGED_EVERY == 1:
                log.warning(
                    "bus.error",
                    client=name,
                    error=str(exc),
                    failed_attempts=failed_attempts,
                    hint="NATS cannot be reached; trying again twice a second, "
                    f"one line per {UNREACHABLE_LOGGED_EVERY} attempts",
                )
            return
        log.warning("bus.error", client=name, error=str(exc))
        if refused_after is None or not refusal:
            return
        refusals += 1
        if refusals >= refused_after and excused is not None and (why := excused()) is not None:
            if refusals == refused_after:  # said once per shut-out, not on every attempt
                log.warning("bus.identity_shut_out", client=name, hint=why)
            return
        if refusals >= refused_after and not refused.is_set():
            refused.set()
            log.error(
                "bus.identity_refused",
                client=name,
                refusals=refusals,
                hint="NATS no longer accepts this key: the host was revoked or left; ask an operator",
            )
            if on_refused is not None:
                await on_refused()

    async def on_disconnected() -> None:
        # nats-py calls this on our own close() as well, with the client already closed: a
        # process ending or a short command finishing is not a lost server worth a warning.
        if client is not None and client.is_closed:
            if isinstance(client, SturdyClient) and not client.close_asked:
                log.error(
                    "bus.closed_for_good",
                    client=name,
                    error=str(client.last_error),
                    hint="the NATS client gave up its connection and will not reconnect; "
                    "this process hears nothing more from the bus: restart it",
                )
                if on_closed_for_good is not None:
                    await on_closed_for_good()
                return
            log.debug("bus.closed", client=name)
            return
        log.warning("bus.disconnected", client=name)

    async def on_reconnected() -> None:
        nonlocal refusals, failed_attempts
        refusals = 0
        log.info("bus.reconnected", client=name, failed_attempts=failed_attempts)
        failed_attempts = 0
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
    servers = nats_servers(url)
    attempt = 0
    while True:
        attempt += 1
        client = SturdyClient()
        try:
            return await _connect_unless_refused(client, servers, options, refused)
        except IdentityRefused as exc:  # an OSError too: before the clause that retries those
            raise IdentityRefused(
                f"NATS at {url} refuses this machine's key ({refusals} times): it is no longer "
                "accepted (revoked? or left the pool over an hour ago?); ask an operator"
            ) from exc
        except (OSError, nats.errors.NoServersError, TimeoutError) as exc:
            if attempt >= first_attempts:
                raise ConnectionError(
                    f"cannot reach NATS at {url} ({exc!r}); is nats-server running there?"
                ) from exc


async def _connect_unless_refused(
    nc: NATS, servers: list[str], options: dict[str, Any], refused: asyncio.Event
) -> NATS:
    """nc.connect, given up once `refused` is set: nats-py would retry a refused key forever."""
    connecting = asyncio.ensure_future(nc.connect(servers, **options))
    watching = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait([connecting, watching], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if connecting.done() and not refused.is_set():
        if connecting.exception() is not None:
            # nats-py leaves the socket of a failed connect open (a refused key, a server that
            # went away mid-handshake): close it before the caller tries again.
            with contextlib.suppress(Exception):
                await nc.close()
        connecting.result()
        return nc
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(Exception):
        await nc.close()  # its socket too
    raise IdentityRefused()
