"""NATS connections the server refuses or drops (real nats-server with nkeys).

nats-py leaves the socket of a refused connect open; `potluck join` asks again every half
second until a reload admits its key, and a test process collected those sockets later, in
another test, as unraisable ResourceWarnings. And a connection the server drops while it
waits for an answer waits out the request's whole timeout unless the asker watches for it.
"""

import asyncio
import gc
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from potluck.contracts.join_token import JoinToken
from potluck.contracts.subjects import JOIN, host_subject
from potluck.events.connection import IdentityRefused, connect_bus
from potluck.localstack import NatsServer
from potluck.member.join import SPENT, JoinError, _connect, redeem
from potluck.registry.nats_auth import new_user_key, public_key_of, render_authorization, write_authorization
from tests.fixtures.servers import SERVICE_SEED


def leaked_sockets() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_refused_connects_leave_no_socket_open(guarded_nats: NatsServer) -> None:
    """Tried: five joins' connects with a key the server does not admit, and a service's
    connect_bus refused until it gives up. Must hold: each is refused as such (PermissionError,
    IdentityRefused), and the garbage collector finds no unclosed socket or transport after."""
    gc.collect()
    stranger = new_user_key().seed
    for _ in range(5):
        with pytest.raises(PermissionError):
            await _connect(guarded_nats.url, stranger, "h-stranger")
    with pytest.raises(IdentityRefused):
        await connect_bus(guarded_nats.url, name="stranger", seed=stranger, refused_after=2)
    assert leaked_sockets() == []


def admitted_join_token(server: NatsServer, host_id: str) -> JoinToken:
    """A join token whose throwaway key `server` admits (after the reload), as enrollment leaves it."""
    throwaway = new_user_key()
    write_authorization(
        server.auth_file,
        render_authorization([public_key_of(SERVICE_SEED)], [], [(host_id, throwaway.public)]),
    )
    server.reload()
    return JoinToken(
        host_id=host_id,
        name=host_id,
        nats_url=server.url,
        join_seed=throwaway.seed,
        secret="s" * 32,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


async def redeem_while(
    server: NatsServer, host_id: str, meanwhile: Callable[[], Awaitable[None]]
) -> JoinError:
    """redeem a token of `host_id`; the service side takes its request, answers nothing, and runs
    `meanwhile`. What redeem raised, within 30 s (its own timeout is 120 s)."""
    token = admitted_join_token(server, host_id)
    service = await connect_bus(server.url, name="registry", seed=SERVICE_SEED)
    asked = asyncio.Event()

    async def take(msg: object) -> None:
        asked.set()
        await meanwhile()

    await service.subscribe(host_subject(JOIN, host_id), cb=take)
    await service.flush()
    try:
        redeeming = asyncio.create_task(redeem(token, new_user_key().public, timeout=120))
        # Admitted: the request reached the service side.
        async with asyncio.timeout(30):
            await asked.wait()
        with pytest.raises(JoinError) as refused:
            async with asyncio.timeout(30):
                await redeeming
        return refused.value
    finally:
        await service.close()


async def test_a_join_dropped_by_a_reload_while_it_waits_is_told_the_token_is_spent(
    guarded_nats: NatsServer,
) -> None:
    """Tried: `potluck join`'s redeem with a token whose throwaway key the server admits; while
    its request waits, the key is taken out of the users file and nats-server reloads, as the
    registry does once a token is spent (nats-server then closes the connection, saying nothing).
    Must hold: redeem fails at once with the spent-token message, not after its timeout with
    "did not answer" (nats-py leaves a request waiting on a closed connection)."""

    async def revoke() -> None:
        write_authorization(
            guarded_nats.auth_file, render_authorization([public_key_of(SERVICE_SEED)], [], [])
        )
        guarded_nats.reload()

    refused = await redeem_while(guarded_nats, "h-spent", revoke)
    assert str(refused) == SPENT


async def test_a_join_whose_nats_stops_while_it_waits_says_nats_is_unreachable(
    guarded_nats: NatsServer,
) -> None:
    """Tried: the same, but nats-server stops while the request waits. Must hold: redeem fails
    at once saying it cannot reach the pool's NATS (not that the token is spent)."""

    async def stop() -> None:
        await asyncio.to_thread(guarded_nats.stop)

    refused = await redeem_while(guarded_nats, "h-gone", stop)
    assert str(refused).startswith(f"cannot reach the pool's NATS at {guarded_nats.url}"), refused
