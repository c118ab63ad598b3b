"""`Expect: 100-continue` from a token given out a moment ago (services/allocator/api.py,
`_continue_if_known`): the allocator's own app over real HTTP on a free loopback port, its engine
folding a real Postgres log, its follower started only once the request is under way, so that
the new user is not folded when the request comes (as between `potluck ops users add` and the
allocator's next fold)."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from potluck.allocator.api import AUTH, make_app
from potluck.allocator.authentication import FailureWindow
from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.users import add_user
from potluck.contracts.allocation_events import Quota, user_stream
from potluck.events import EventStore
from tests.helpers import answer_body, stop

#: How long the follower is held back once a request's head is sent, seconds: within the
#: token lookup's catch-up bound (authentication.CATCH_UP_S, 2 s).
HELD_BACK_S = 0.3


@pytest.fixture
async def unfollowed(store: EventStore) -> AsyncIterator[tuple[AllocatorEngine, web.Application, int]]:
    """The allocator's app on a caught-up engine that does not follow the log (the test starts
    its follower), at most 2 failed authentications per address: the engine, the app and its
    port."""
    engine = AllocatorEngine(store)
    await engine.catch_up()
    app = make_app(engine, FailureWindow(limit=2))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield engine, app, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _expect_continue(port: int, token: str, body: bytes) -> tuple[bytes, bytes]:
    """POST /v1/allocations' head with `Expect: 100-continue`: the first answer's head and,
    when it was `100 Continue`, the answer to `body` sent then (else the first answer's body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"POST /v1/allocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        # Well within curl's own wait for the invitation (1 s) past the follower's hold.
        async with asyncio.timeout(HELD_BACK_S + 0.6):
            first = await reader.readuntil(b"\r\n\r\n")
        if first != b"HTTP/1.1 100 Continue\r\n\r\n":
            # Its answer's body only: the allocator lingers for the body it did not invite.
            async with asyncio.timeout(10):
                return first, await answer_body(reader, first)
        writer.write(body)
        async with asyncio.timeout(10):
            return first, await reader.read()
    finally:
        writer.close()


async def test_a_token_given_a_moment_ago_is_invited_once_the_log_is_caught_up(
    unfollowed: tuple[AllocatorEngine, web.Application, int],
) -> None:
    """Tried: `Expect: 100-continue` on POST /v1/allocations with the token of a user added to
    the log after the allocator's last fold, its follower held back 0.3 s; then the same with a
    well-shaped token nobody holds, from the same address.
    Before: the new token got no `100 Continue` (its client sent the body only once it stopped
    waiting for one: curl after a second). Must hold: the new token is invited within the
    catch-up, and its body then gets its answer (400 naming `memory`); the unknown token gets
    no invitation but its 401, counted once against the address (not locked out at a limit of
    2)."""
    engine, app, port = unfollowed
    events, token = add_user(None, "carol", Quota())
    await engine.store.append(user_stream("carol"), events, expected_version=0)
    assert engine.users.authenticate(token) is None  # not folded: the follower is not running
    loop = asyncio.get_running_loop()
    following: list[asyncio.Task[None]] = []
    loop.call_later(HELD_BACK_S, lambda: following.append(asyncio.create_task(engine.follow())))
    try:
        first, answer = await _expect_continue(port, token, b'{"cpus": 1}')
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"field": "memory"' in answer, answer[-300:]

        first, answer = await _expect_continue(port, "pl_" + "G" * 43, b'{"cpus": 1}')
        assert first.startswith(b"HTTP/1.1 401 "), first
        assert b'"UNAUTHENTICATED"' in answer, answer
    finally:
        await stop(*following)
    assert app[AUTH].locked("127.0.0.1") is None
