"""The web pages' bounds (services/allocator/web/) over real HTTP, against the allocator's own app
on a real event store: what one signed-in user may hold (sessions, live streams, past folds) and
that it never costs another user.

tests/fixtures/web_app.py serves it: the allocator's app on a free port, a plain HTTP client
keeping each session's cookie by hand, so that one test holds many sessions at once.
"""

import asyncio
import re

import aiohttp
from aiohttp import web

from potluck.allocator.web import routes
from potluck.allocator.web.live import MAX_STREAMS_PER_OWNER, MAX_STREAMS_PER_SESSION, StreamSlots
from potluck.allocator.web.sessions import COOKIE, MAX_SESSIONS_PER_OWNER, Sessions
from potluck.events import EventStore
from tests.fixtures.web_app import WebApp, serving

# Sessions.


async def test_signing_in_again_and_again_ends_only_ones_own_oldest_sessions(pages: WebApp) -> None:
    """Tried: alice signs in once; bob signs in 5 times past his cap of live sessions
    (MAX_SESSIONS_PER_OWNER). Must hold: alice's session still works; bob's 5 oldest sessions are
    signed out and his newest ones work; he holds exactly his cap."""
    alice = await pages.signed_in("alice")
    bobs = [await pages.signed_in("bob") for _ in range(MAX_SESSIONS_PER_OWNER + 5)]
    assert await pages.works(alice), "bob's sign-ins signed alice out"
    assert [await pages.works(s) for s in bobs[:5]] == [False] * 5, "bob's oldest sessions must end"
    assert all([await pages.works(s) for s in bobs[5:]])
    assert pages.app[routes.SESSIONS].count_of("user:bob") == MAX_SESSIONS_PER_OWNER


async def test_a_full_allocator_refuses_a_new_sign_in_and_signs_nobody_out(store: EventStore) -> None:
    """Tried: with room for 3 sessions in all, alice, bob and carol sign in; then dave signs in;
    then alice signs out and dave signs in again.
    Must hold: dave's first sign-in is refused (503, a Retry-After, the reason on the page, no
    session cookie) and the three sessions still work; once alice's ended, dave's sign-in works."""

    def small(app: web.Application) -> None:
        app[routes.SESSIONS] = Sessions(max_sessions=3)

    async with serving(store, ("alice", "bob", "carol", "dave"), small) as pages:
        held = {who: await pages.signed_in(who) for who in ("alice", "bob", "carol")}
        async with pages.http.post(
            f"{pages.url}/web/signin",
            data={"token": pages.tokens["dave"]},
            headers={"Origin": pages.url},
            allow_redirects=False,
        ) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) > 0
            assert "as many web sessions as it can" in await r.text()
            assert COOKIE not in r.cookies
        for who, session_id in held.items():
            assert await pages.works(session_id), f"dave's sign-in signed {who} out"

        status, page = await pages.get(held["alice"], "/")
        assert status == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        async with pages.http.post(
            f"{pages.url}/web/signout",
            data={"csrf": csrf.group(1)},
            headers={"Cookie": f"{COOKIE}={held['alice']}"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
        assert not await pages.works(held["alice"])
        assert await pages.works(await pages.signed_in("dave"))


# Live streams.


async def test_one_session_holds_a_bounded_number_of_live_streams_and_others_are_unaffected(
    pages: WebApp,
) -> None:
    """Tried: alice, in one session, opens pool streams up to her session's bound less one and
    her pending allocation's log tail, then one more of each; bob opens his pool stream; alice
    closes one of hers and opens another.
    Must hold: every stream within the bound opens (200, an event stream); the two past it are
    refused with 429 and a message saying what to close; bob's opens; once one of alice's is
    closed, her new one opens."""
    alice = await pages.signed_in("alice")
    alloc_id = await pages.pending("alice")
    held = [await pages.open_stream(alice, "/web/live/pool") for _ in range(MAX_STREAMS_PER_SESSION - 1)]
    held.append(await pages.open_stream(alice, f"/web/live/allocations/{alloc_id}/log"))
    try:
        assert [r.status for r in held] == [200] * MAX_STREAMS_PER_SESSION
        assert all(r.headers["Content-Type"].startswith("text/event-stream") for r in held)
        for path in ("/web/live/pool", f"/web/live/allocations/{alloc_id}/log", "/web/live/mine"):
            status, text = await pages.try_stream(alice, path)
            assert status == 429, path
            assert "live pages open" in text
        bob = await pages.open_stream(await pages.signed_in("bob"), "/web/live/pool")
        assert bob.status == 200, "alice's streams must not cost bob his"
        bob.close()

        held.pop(0).close()  # the browser goes away: its slot comes free
        reopened: list[aiohttp.ClientResponse] = []

        async def reopen() -> None:
            r = await pages.open_stream(alice, "/web/live/pool")
            if r.status == 200:
                reopened.append(r)
            else:
                r.close()

        deadline = asyncio.get_running_loop().time() + 30
        while not reopened:
            assert asyncio.get_running_loop().time() < deadline, "a closed stream's slot never came free"
            await reopen()
            if not reopened:
                await asyncio.sleep(0.2)
        held.extend(reopened)
    finally:
        for r in held:
            r.close()


async def test_one_user_holds_a_bounded_number_of_live_streams_across_sessions(pages: WebApp) -> None:
    """Tried: alice signs in three times and opens as many pool streams as each session may, until
    her bound across sessions; then one more from a fresh session.
    Must hold: the streams within her bound open (200); the one past it is refused with 429 and a
    message naming her browsers; bob's stream still opens."""
    per_session = MAX_STREAMS_PER_SESSION
    held: list[aiohttp.ClientResponse] = []
    try:
        while len(held) < MAX_STREAMS_PER_OWNER:
            session = await pages.signed_in("alice")
            room = min(per_session, MAX_STREAMS_PER_OWNER - len(held))
            held.extend([await pages.open_stream(session, "/web/live/pool") for _ in range(room)])
        assert [r.status for r in held] == [200] * MAX_STREAMS_PER_OWNER
        status, text = await pages.try_stream(await pages.signed_in("alice"), "/web/live/pool")
        assert status == 429
        assert "in all your browsers" in text
        bob = await pages.open_stream(await pages.signed_in("bob"), "/web/live/pool")
        assert bob.status == 200
        bob.close()
    finally:
        for r in held:
            r.close()


async def test_a_full_allocator_refuses_a_new_stream_to_anybody_until_one_ends(store: EventStore) -> None:
    """Tried: with room for 3 live streams in all (live.MAX_STREAMS), alice opens 2 and bob 1;
    then carol, within her own bounds, opens one; then bob closes his and carol tries again.
    Must hold: carol's first stream is refused with 503, a Retry-After and the reason; the three
    open streams go on; once bob's ended, carol's opens."""

    def small(app: web.Application) -> None:
        app[routes.STREAMS] = StreamSlots(total=3)

    async with serving(store, ("alice", "bob", "carol"), small) as pages:
        alice, bob, carol = [await pages.signed_in(who) for who in ("alice", "bob", "carol")]
        held = [await pages.open_stream(alice, "/web/live/pool") for _ in range(2)]
        bobs = await pages.open_stream(bob, "/web/live/pool")
        try:
            assert [r.status for r in [*held, bobs]] == [200] * 3
            async with pages.http.get(
                f"{pages.url}/web/live/pool", headers={"Cookie": f"{COOKIE}={carol}"}
            ) as refused:
                assert refused.status == 503
                assert int(refused.headers["Retry-After"]) > 0
                assert "serves 3 live pages at once" in await refused.text()
            assert not any(r.closed for r in [*held, bobs]), "a refused stream closed others'"

            bobs.close()  # bob's browser goes away: his slot comes free for anybody
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                opened = await pages.open_stream(carol, "/web/live/pool")
                if opened.status == 200:
                    held.append(opened)
                    break
                opened.close()
                assert asyncio.get_running_loop().time() < deadline, "bob's ended stream never freed a slot"
                await asyncio.sleep(0.2)
        finally:
            for r in [*held, bobs]:
                r.close()


# Failed sign-ins.


async def test_failed_sign_ins_lock_out_guesses_from_an_address_but_not_a_good_token(pages: WebApp) -> None:
    """Tried: 30 sign-ins with a token nobody holds from 127.0.0.1 (the API's limit), then one
    more guess, then alice's own token from the same address.
    Must hold: the guesses are 401s, then the next is a 429 with Retry-After and no session;
    alice still signs in (a script looping on a stale token must not lock out everyone behind
    its address)."""
    for guess in range(31):
        async with pages.http.post(
            f"{pages.url}/web/signin",
            data={"token": "nope"},
            headers={"Origin": pages.url},
            allow_redirects=False,
        ) as r:
            if guess < 30:
                assert r.status == 401
                continue
            assert r.status == 429
            assert 0 < int(r.headers["Retry-After"]) <= 60
            assert "too many failed sign-ins" in await r.text()
            assert COOKIE not in r.cookies
    alice = await pages.signed_in("alice")
    assert await pages.works(alice)
