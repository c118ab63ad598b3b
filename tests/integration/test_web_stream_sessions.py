"""An open page's live parts end with its session (services/allocator/web/live.py, log_tail.py),
over real HTTP against the allocator's own app on a real event store (tests/fixtures/web_app.py).

A stream is opened while its session is good; what ends the session afterwards (signing out, the
user's token rotated after a leak) must end the stream too, or a tab left open keeps a feed of the
user's allocations and container logs that nothing else can revoke.
"""

import asyncio

import aiohttp

from potluck.allocator.users import rotate_token
from potluck.allocator.web.live import SIGNED_OUT, SIGNED_OUT_TEXT
from potluck.contracts.allocation_events import user_stream
from tests.fixtures.web_app import WebApp

#: Well past live.GONE_CHECK_S (how often a waiting stream looks at its session) and a fold.
ENDS_WITHIN_S = 15.0


async def _read_to_end(stream: aiohttp.ClientResponse) -> str:
    """All the stream sends until the server ends it (a stream left open fails the wait)."""
    async with asyncio.timeout(ENDS_WITHIN_S):
        return (await stream.read()).decode()


async def test_signing_out_ends_the_sessions_open_streams_and_no_others(pages: WebApp) -> None:
    """Tried: alice opens her allocations' live part and her pending allocation's log in one
    session, and the pool's in another; then signs the first session out.
    Must hold: both streams of the signed-out session end with a `signed-out` event; her other
    session's stream stays open and still gets fragments."""
    alice, other = await pages.signed_in("alice"), await pages.signed_in("alice")
    alloc_id = await pages.pending("alice")
    mine = await pages.open_stream(alice, "/web/live/mine")
    log = await pages.open_stream(alice, f"/web/live/allocations/{alloc_id}/log")
    pool = await pages.open_stream(other, "/web/live/pool")
    try:
        assert [r.status for r in (mine, log, pool)] == [200, 200, 200]
        assert (await pool.content.readuntil(b"\n\n")).startswith(b"event: fragment")
        status, _ = await pages.post(alice, "/web/signout", {})
        assert status == 303

        for ended in (mine, log):
            sent = await _read_to_end(ended)
            assert f"event: {SIGNED_OUT}\ndata: {SIGNED_OUT_TEXT}\n\n" in sent, sent
            assert sent.endswith("\n\n")
        assert not pool.content.at_eof(), "signing one session out ended another's stream"
        await pages.pending("alice")  # the fold moves: the other session's page is rendered anew
        async with asyncio.timeout(ENDS_WITHIN_S):
            assert (await pool.content.readuntil(b"\n\n")).startswith(b"event: fragment")
    finally:
        for r in (mine, log, pool):
            r.close()


async def test_rotating_a_users_token_ends_every_stream_of_its_sessions(pages: WebApp) -> None:
    """Tried: alice (two sessions) and bob each hold live parts open; alice's token is rotated,
    as after a leak.
    Must hold: every one of alice's streams ends with a `signed-out` event, sending nothing of her
    allocations after the rotation; bob's stream stays open."""
    alice = [await pages.signed_in("alice") for _ in range(2)]
    alloc_id = await pages.pending("alice")
    hers = [
        await pages.open_stream(alice[0], "/web/live/mine"),
        await pages.open_stream(alice[1], f"/web/live/allocations/{alloc_id}"),
        await pages.open_stream(alice[1], f"/web/live/allocations/{alloc_id}/log"),
    ]
    bobs = await pages.open_stream(await pages.signed_in("bob"), "/web/live/pool")
    try:
        assert [r.status for r in [*hers, bobs]] == [200] * 4
        for r in hers[:2]:
            await r.content.readuntil(b"\n\n")  # the first fragment, before the rotation

        user = pages.engine.users.users["alice"]
        events, _ = rotate_token(user, "alice")
        await pages.engine.store.append(user_stream("alice"), events)
        later = await pages.pending("alice")  # after the rotation, not to be shown to her old tabs

        for ended in hers:
            sent = await _read_to_end(ended)
            assert f"event: {SIGNED_OUT}\n" in sent, sent
            assert later not in sent, "a stream showed what came after its token was rotated"
        assert not bobs.content.at_eof(), "alice's rotation ended bob's stream"
        assert not await pages.works(alice[0])
    finally:
        for r in [*hers, bobs]:
            r.close()
