"""Each user's rate of changes (user_rates.py) on the allocator's own app over real HTTP, its
engine folding a real Postgres log (tests/fixtures/web_app.py), its clock in the test's hand:
a burst past the rate is refused with 429 and recorded nowhere, another user goes on, and
once the wait named has passed the user changes things again."""

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from potluck.allocator.api import ENGINE
from potluck.allocator.pool_registry import PoolRegistry
from potluck.allocator.registry_auth import POOL_REGISTRY
from potluck.allocator.registry_tokens import TokenIssuer
from potluck.allocator.user_rates import USER_RATES, TooManyFetches, UserRates
from potluck.allocator.web.sessions import COOKIE
from potluck.events import EventStore
from potluck.kernel.key_rates import RatePolicy
from tests.fixtures.web_app import WebApp, serving

BURST = 4
SPEC = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": "x:1", "command": ["true"]}


@pytest.fixture
async def limited(store: EventStore) -> AsyncIterator[tuple[WebApp, list[float]]]:
    """The allocator's app for alice and bob, each allowed BURST changes at once and then one a
    second by a clock the test moves (nothing waits on a real one), and a paused host where
    what they ask for waits."""
    now = [0.0]

    def prepare(app: web.Application) -> None:
        app[USER_RATES] = UserRates(RatePolicy(per_s=1.0, burst=BURST), clock=lambda: now[0])

    async with serving(store, ("alice", "bob"), prepare) as served:
        await served.paused_host()
        yield served, now


async def _call(
    app: WebApp, who: str, method: str, path: str, body: Any = None
) -> tuple[int, Any, str | None]:
    headers = {"Authorization": f"Bearer {app.tokens[who]}"}
    async with app.http.request(method, f"{app.url}{path}", json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def test_a_burst_past_the_rate_is_refused_recording_nothing_and_others_go_on(
    limited: tuple[WebApp, list[float]],
) -> None:
    """Tried: alice requests BURST allocations at once, then one more, then releases one of
    hers, extends it, submits a job and cancels one: all past her rate; bob then requests one;
    the clock moves on by the Retry-After alice was given, and she requests again. Before:
    nothing but her quota bounded her, which a loop of create and release never reaches. Must
    hold: her first BURST are taken (202, pending); each request past them is answered 429
    RATE_LIMITED with a Retry-After of whole seconds and a message saying when to try again,
    and the log's head does not move (her allocation stays pending, not released); bob's
    request is taken; after the wait alice's is taken again."""
    app, now = limited
    made = []
    for _ in range(BURST):
        status, answer, _ = await _call(app, "alice", "POST", "/v1/allocations", SPEC)
        assert status == 202, answer
        made.append(answer["id"])
    head = await app.engine.store.head_position()
    job_spec = {"tasks": 2, **SPEC}
    past_the_rate = [
        ("POST", "/v1/allocations", SPEC),
        ("DELETE", f"/v1/allocations/{made[0]}", None),
        ("POST", f"/v1/allocations/{made[0]}/extend", {"by": 60}),
        ("POST", "/v1/jobs", job_spec),
        ("DELETE", "/v1/jobs/j-0000", None),
    ]
    waits = []
    for method, path, body in past_the_rate:
        status, answer, retry_after = await _call(app, "alice", method, path, body)
        assert (status, answer["error"]["code"]) == (429, "RATE_LIMITED"), (method, path, answer)
        assert retry_after is not None
        assert int(retry_after) >= 1, retry_after
        assert f"try again in {retry_after} s" in answer["error"]["message"]
        waits.append(int(retry_after))
    assert await app.engine.store.head_position() == head
    status, answer, _ = await _call(app, "alice", "GET", f"/v1/allocations/{made[0]}")
    assert (status, answer["state"]) == (200, "pending"), answer

    status, answer, _ = await _call(app, "bob", "POST", "/v1/allocations", SPEC)
    assert status == 202, answer

    now[0] += waits[-1]
    status, answer, _ = await _call(app, "alice", "POST", "/v1/allocations", SPEC)
    assert status == 202, answer
    assert await app.engine.store.head_position() > head


async def test_reads_are_not_counted_and_the_pages_share_the_rate(
    limited: tuple[WebApp, list[float]],
) -> None:
    """Tried: alice reads her allocations and her one allocation many times over, then spends
    her burst from the API, then releases her allocation from its page. Must hold: the reads
    all answer 200 and leave her burst whole (BURST requests are still taken); the page's
    release is refused (sent back with error=RATE_LIMITED) and her allocation stays pending."""
    app, _ = limited
    status, answer, _ = await _call(app, "alice", "POST", "/v1/allocations", SPEC)
    assert status == 202, answer
    alloc_id = answer["id"]
    for _ in range(3 * BURST):
        assert (await _call(app, "alice", "GET", "/v1/allocations"))[0] == 200
        assert (await _call(app, "alice", "GET", f"/v1/allocations/{alloc_id}"))[0] == 200
    for _ in range(BURST - 1):
        status, answer, _ = await _call(app, "alice", "POST", "/v1/allocations", SPEC)
        assert status == 202, answer
    session = await app.signed_in("alice")
    status, location = await app.post(session, f"/web/allocations/{alloc_id}/release", {})
    assert status == 303
    assert location.endswith("error=RATE_LIMITED"), location
    status, answer, _ = await _call(app, "alice", "GET", f"/v1/allocations/{alloc_id}")
    assert (status, answer["state"]) == (200, "pending"), answer


@pytest.fixture
async def fetches_limited(store: EventStore) -> AsyncIterator[tuple[WebApp, list[float]]]:
    """The allocator's app for alice and bob, each allowed BURST fetches at once and then one a
    second by a clock the test moves; a paused host where what they ask for waits; and a pool
    registry address where nothing listens (a GET /v1/images that is let through tries it)."""
    now = [0.0]
    with socket.socket() as probe:  # a loopback port that was free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"

    def prepare(app: web.Application) -> None:
        engine = app[ENGINE]
        engine.fetches = UserRates(
            RatePolicy(per_s=1.0, burst=BURST), clock=lambda: now[0], refusal=TooManyFetches
        )
        app[POOL_REGISTRY] = PoolRegistry(nowhere, TokenIssuer(ec.generate_private_key(ec.SECP256R1())))

    async with serving(store, ("alice", "bob"), prepare) as served:
        await served.paused_host()
        yield served, now


async def test_reads_of_the_log_past_the_rate_are_refused_and_reads_of_the_model_are_not(
    fetches_limited: tuple[WebApp, list[float]],
) -> None:
    """Tried: alice reads BURST allocation ids never made (`a-` and 12 hex digits: each one a
    read of Postgres, as is an allocation that ended long ago), then another, the events of her
    own pending allocation, her list `?after=` a never-made id, and her images (GET /v1/images:
    a request to the pool registry per repository); then her allocation itself, her list and
    her jobs; bob reads a never-made id and his images; the clock moves by the Retry-After alice
    was given. Before: nothing bounded such reads, and one user looping on random ids took
    the allocator's 10 connections to Postgres from everyone (2,000 reads a second). Must
    hold: her first BURST are 404 NOT_FOUND; each read of the log past them is 429
    RATE_LIMITED with a Retry-After of whole seconds that the message repeats; what the model
    answers (her allocation, her lists) is 200 all the same; bob's read is his own 404, and his
    images are asked of the registry (503: nothing listens there); after the wait alice's read
    is a 404 again."""
    app, now = fetches_limited
    status, mine, _ = await _call(app, "alice", "POST", "/v1/allocations", SPEC)
    assert status == 202, mine
    never = [f"a-{n:012x}" for n in range(BURST + 1)]
    for alloc_id in never[:BURST]:
        status, answer, _ = await _call(app, "alice", "GET", f"/v1/allocations/{alloc_id}")
        assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), answer
    waits = []
    for path in (
        f"/v1/allocations/{never[BURST]}",
        f"/v1/allocations/{never[BURST]}?wait=running&timeout=1",
        f"/v1/allocations/{mine['id']}/events",
        f"/v1/allocations?after={never[0]}",
        "/v1/images",
    ):
        status, answer, retry_after = await _call(app, "alice", "GET", path)
        assert (status, answer["error"]["code"]) == (429, "RATE_LIMITED"), (path, answer)
        assert retry_after is not None
        assert int(retry_after) >= 1, retry_after
        assert f"try again in {retry_after} s" in answer["error"]["message"]
        waits.append(int(retry_after))
    for path in (f"/v1/allocations/{mine['id']}", "/v1/allocations", "/v1/jobs"):
        status, answer, _ = await _call(app, "alice", "GET", path)
        assert status == 200, (path, answer)

    status, answer, _ = await _call(app, "bob", "GET", f"/v1/allocations/{never[0]}")
    assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), answer
    status, answer, _ = await _call(app, "bob", "GET", "/v1/images")  # tried: nothing answers there
    assert (status, answer["error"]["code"]) == (503, "REGISTRY_UNAVAILABLE"), answer

    now[0] += max(waits)
    status, answer, _ = await _call(app, "alice", "GET", f"/v1/allocations/{never[BURST]}")
    assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), answer


async def test_the_allocation_page_past_the_fetch_rate_says_so_as_a_page(
    fetches_limited: tuple[WebApp, list[float]],
) -> None:
    """Tried: alice, signed in, opens the page of BURST allocation ids never made (each a read
    of the log), then one more; the clock moves by the Retry-After she was given and she opens
    it again. Must hold: the first BURST are the page's 404; the next is a 429 page (HTML, with
    the pages' own headers) saying she reads faster than the pool allows and when to try
    again, with that Retry-After, not the API's JSON; after the wait it is the 404 again."""
    app, now = fetches_limited
    session = await app.signed_in("alice")
    never = [f"a-{n:012x}" for n in range(BURST + 1)]
    for alloc_id in never[:BURST]:
        status, page = await app.get(session, f"/web/allocations/{alloc_id}")
        assert status == 404, page[:300]
    headers = {"Cookie": f"{COOKIE}={session}"}
    async with app.http.get(f"{app.url}/web/allocations/{never[BURST]}", headers=headers) as r:
        page = await r.text()
        assert r.status == 429, page[:300]
        assert r.content_type == "text/html", r.content_type
        retry_after = r.headers["Retry-After"]
        assert int(retry_after) >= 1
        assert f"try again in {retry_after} s" in page, page
        assert "faster than this pool allows" in page, page
    now[0] += int(retry_after)
    status, page = await app.get(session, f"/web/allocations/{never[BURST]}")
    assert status == 404, page[:300]
