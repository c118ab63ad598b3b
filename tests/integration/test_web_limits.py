"""The web pages' bounds (services/allocator/web/) over real HTTP, against the allocator's own app
on a real event store: what one signed-in user may hold (sessions, live streams, past folds) and
that it never costs another user.

The app is the allocator's (`api.make_app`), served on a free port, its engine folding a real
Postgres log; requests go through a plain HTTP client that keeps each session's cookie by hand,
so that one test can hold many sessions at once.
"""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from potluck.allocator.api import make_app
from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.users import add_user
from potluck.allocator.web import routes
from potluck.allocator.web.live import MAX_STREAMS_PER_OWNER, MAX_STREAMS_PER_SESSION
from potluck.allocator.web.sessions import COOKIE, MAX_SESSIONS_PER_OWNER, Sessions
from potluck.contracts.allocation_events import (
    AllocationRequested,
    AllocationSpec,
    Quota,
    alloc_stream,
    user_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.events import EventStore
from tests.helpers import stop, wait_until


@dataclass
class WebApp:
    url: str
    app: web.Application
    engine: AllocatorEngine
    http: aiohttp.ClientSession
    tokens: dict[str, str]

    async def sign_in(self, who: str) -> tuple[int, str | None, str]:
        """Post the sign-in form with `who`'s token: the status, the new session's id (or None)
        and the page's text."""
        async with self.http.post(
            f"{self.url}/web/signin", data={"token": self.tokens[who]}, allow_redirects=False
        ) as r:
            cookie = r.cookies.get(COOKIE)
            return r.status, cookie.value if cookie is not None and cookie.value else None, await r.text()

    async def signed_in(self, who: str) -> str:
        status, session_id, text = await self.sign_in(who)
        assert status == 303, text
        assert session_id is not None
        return session_id

    async def get(self, session_id: str, path: str) -> tuple[int, str]:
        """GET `path` with the session's cookie: the status and the body (no redirect followed)."""
        async with self.http.get(
            f"{self.url}{path}", headers={"Cookie": f"{COOKIE}={session_id}"}, allow_redirects=False
        ) as r:
            return r.status, await r.text()

    async def pending(self, user: str) -> str:
        """An allocation of `user`'s that waits (no host here), as its request writes it, once
        the allocator has folded it."""
        alloc_id = f"a-{user}-{len(self.engine.allocations.allocations):04}"
        spec = AllocationSpec(
            resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=64 << 20), image="x:1"
        )
        requested = AllocationRequested(alloc_id=alloc_id, user=user, spec=spec, lifetime_s=3600)
        await self.engine.store.append(alloc_stream(alloc_id), [requested], expected_version=0)
        await wait_until(lambda: alloc_id in self.engine.allocations.allocations, 10, "the request folded")
        return alloc_id

    async def open_stream(self, session_id: str, path: str) -> aiohttp.ClientResponse:
        """Open a live stream and keep it open (the caller closes it): its response, headers read."""
        return await self.http.get(f"{self.url}{path}", headers={"Cookie": f"{COOKIE}={session_id}"})

    async def try_stream(self, session_id: str, path: str) -> tuple[int, str]:
        """Open a live stream and close it at once: its status, and the body of a refusal."""
        r = await self.open_stream(session_id, path)
        try:
            return r.status, "" if r.status == 200 else await r.text()
        finally:
            r.close()

    async def works(self, session_id: str) -> bool:
        """Whether the session still opens the pool page (a signed-out one is sent to sign in)."""
        status, _ = await self.get(session_id, "/")
        assert status in (200, 303), status
        return status == 200


@contextlib.asynccontextmanager
async def serving(
    store: EventStore, users: tuple[str, ...], prepare: Callable[[web.Application], None]
) -> AsyncIterator[WebApp]:
    """The allocator's app for `users`, `prepare`d (its bounds changed, say) before it starts."""
    tokens = {}
    for name in users:
        events, tokens[name] = add_user(None, name, Quota())
        await store.append(user_stream(name), events, expected_version=0)
    engine = AllocatorEngine(store)
    await engine.catch_up()
    following = asyncio.create_task(engine.follow())
    app = make_app(engine)
    prepare(app)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # No cookie jar: each test keeps its sessions' ids itself, several per user.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            yield WebApp(f"http://127.0.0.1:{port}", app, engine, http, tokens)
    finally:
        await runner.cleanup()
        await stop(following)


@pytest.fixture
async def pages(store: EventStore) -> AsyncIterator[WebApp]:
    """The allocator's app with users alice and bob, every bound as the allocator has it."""
    async with serving(store, ("alice", "bob"), lambda app: None) as served:
        yield served


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
            f"{pages.url}/web/signin", data={"token": pages.tokens["dave"]}, allow_redirects=False
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
