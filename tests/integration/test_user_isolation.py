"""One user against another's allocations and jobs, on every route of the allocator's app that
names one (the API's and the pages'), over real HTTP with the engine folding a real Postgres log
(tests/fixtures/web_app.py).

What must hold throughout: bob learns nothing of alice's objects. Every answer to bob about one
of alice's ids is byte for byte the answer about an id that never was (status, headers but the
date, body with the id itself replaced), alice's ids appear in none of bob's lists, and nothing
bob sends changes alice's streams.
"""

import re
from typing import Any

from potluck.allocator.web.sessions import COOKIE
from tests.fixtures.web_app import WebApp

#: Ids of the shapes the allocator gives (decisions.new_alloc_id, job_decisions.new_job_id) that
#: no object has.
NEVER_ALLOC = "a-0123456789ab"
NEVER_JOB = "j-0123456789ab"

Answer = tuple[int, dict[str, str], str]


def _as_bob(app: WebApp) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.tokens['bob']}"}


async def _send(
    app: WebApp, method: str, path: str, headers: dict[str, str], **kw: Any
) -> tuple[int, dict[str, str], str]:
    async with app.http.request(
        method, f"{app.url}{path}", headers=headers, allow_redirects=False, **kw
    ) as r:
        kept = {k: v for k, v in r.headers.items() if k not in ("Date", "Content-Length")}
        return r.status, kept, await r.text()


def _same(theirs: Answer, never: Answer, their_id: str, never_id: str, what: str) -> None:
    # The id bob sent may come back (`no allocation <id> of yours`); nothing else may differ.
    status, headers, body = theirs
    assert (status, headers, body.replace(their_id, "ID")) == (
        never[0],
        never[1],
        never[2].replace(never_id, "ID"),
    ), what


async def _alices(app: WebApp) -> tuple[str, str, str]:
    """An allocation of alice's, a job of hers, both pending (the pool's one host is paused: it
    could hold them, so the job is not impossible), and an allocation of hers she released."""
    await app.paused_host()
    headers = {"Authorization": f"Bearer {app.tokens['alice']}"}
    spec = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": "x:1"}
    ids = []
    for _ in range(2):
        async with app.http.post(f"{app.url}/v1/allocations", json=spec, headers=headers) as r:
            created = await r.json()
            assert r.status == 202, created
            ids.append(created["id"])
    alloc_id, ended = ids
    async with app.http.delete(f"{app.url}/v1/allocations/{ended}", headers=headers) as r:
        assert r.status == 200, await r.text()
    async with app.http.post(
        f"{app.url}/v1/jobs", json={"tasks": 2, "command": ["true"], **spec}, headers=headers
    ) as r:
        job = await r.json()
        assert r.status == 201, job
    return alloc_id, job["id"], ended


async def _versions(app: WebApp, *streams: str) -> list[int]:
    return [len(await app.engine.store.read_stream(s)) for s in streams]


async def test_bob_learns_nothing_of_alices_objects_on_any_route(pages: WebApp) -> None:
    """Tried: as bob (bearer token, then a signed-in page session), every route of the app that
    names an allocation or a job (listed from the router, so a new one is not missed), each
    with alice's id and with one that never was: GETs, `?wait=` long polls, a job's tasks and
    their paging, releases, extends and cancels; the lists with alice's ids as `after` and with
    each state filter; the pages of an allocation, its live part and its log stream, and its
    extend and release forms. Must hold: each answer about alice's id equals the one about
    the id that never was (404 alike, same headers, same body but the id); no list of bob's
    holds alice's ids; alice's allocation and job have not changed."""
    app = pages
    alloc_id, job_id, ended = await _alices(app)
    streams = (f"alloc-{alloc_id}", f"job-{job_id}", f"alloc-{ended}")
    before = await _versions(app, *streams)
    bob = _as_bob(app)

    api_cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/allocations/{alloc_id}", {}),
        ("GET", "/v1/allocations/{alloc_id}?wait=running&timeout=0.01", {}),
        ("GET", "/v1/allocations/{alloc_id}?wait=released&timeout=0", {}),
        ("GET", "/v1/allocations/{alloc_id}/events", {}),
        ("POST", "/v1/allocations/{alloc_id}/extend", {"json": {"by": 60}}),
        ("DELETE", "/v1/allocations/{alloc_id}", {}),
        ("GET", "/v1/allocations?after={alloc_id}", {}),
        ("GET", "/v1/allocations?after={alloc_id}&state=pending&limit=1", {}),
        ("GET", "/v1/jobs/{job_id}", {}),
        ("GET", "/v1/jobs/{job_id}?wait=done&timeout=0.01", {}),
        ("GET", "/v1/jobs/{job_id}/tasks", {}),
        ("GET", "/v1/jobs/{job_id}/tasks?after=0&state=pending", {}),
        ("DELETE", "/v1/jobs/{job_id}", {}),
        ("GET", "/v1/jobs?after={job_id}", {}),
    ]
    theirs_and_never = {
        "alloc_id": [(alloc_id, NEVER_ALLOC), (ended, NEVER_ALLOC)],
        "job_id": [(job_id, NEVER_JOB)],
    }
    for method, template, kw in api_cases:
        (name,) = re.findall(r"\{(\w+)\}", template)
        for theirs, never in theirs_and_never[name]:
            got = await _send(app, method, template.format(**{name: theirs}), bob, **kw)
            not_there = await _send(app, method, template.format(**{name: never}), bob, **kw)
            assert got[0] == 404, (method, template, got)
            _same(got, not_there, theirs, never, f"{method} {template}")

    for state in ("", "?state=pending", "?state=released", "?limit=1000"):
        status, _, body = await _send(app, "GET", f"/v1/allocations{state}", bob)
        assert status == 200
        assert [i for i in (alloc_id, ended) if i in body] == [], state
    status, _, body = await _send(app, "GET", "/v1/jobs?limit=1000", bob)
    assert (status, job_id in body) == (200, False)
    # The same lists of alice's hold them: what bob's lack is not missing for everyone.
    alice = {"Authorization": f"Bearer {app.tokens['alice']}"}
    _, _, body = await _send(app, "GET", "/v1/allocations?limit=1000", alice)
    assert [i for i in (alloc_id, ended) if i in body] == [alloc_id, ended]

    session = await app.signed_in("bob")
    cookie = {"Cookie": f"{COOKIE}={session}"}
    _, page = await app.get(session, "/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    form = {"Origin": app.url}
    web_cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/web/allocations/{alloc_id}", {}),
        ("GET", "/web/live/allocations/{alloc_id}", {}),
        ("GET", "/web/live/allocations/{alloc_id}/log", {}),
        ("POST", "/web/allocations/{alloc_id}/extend", {"data": {"csrf": csrf.group(1), "by": "1h"}}),
        ("POST", "/web/allocations/{alloc_id}/release", {"data": {"csrf": csrf.group(1)}}),
        ("GET", "/web/jobs/{job_id}", {}),
    ]
    for method, template, kw in web_cases:
        headers = {**cookie, **form} if method == "POST" else cookie
        (name,) = re.findall(r"\{(\w+)\}", template)
        for theirs, never in theirs_and_never[name]:
            got = await _send(app, method, template.format(**{name: theirs}), headers, **kw)
            not_there = await _send(app, method, template.format(**{name: never}), headers, **kw)
            assert got[0] == 404, (method, template, got)
            _same(got, not_there, theirs, never, f"{method} {template}")
    for path in ("/web/mine", "/"):
        status, body = await app.get(session, path)
        assert status == 200
        assert [i for i in (alloc_id, ended, job_id) if i in body] == [], path

    # Every route naming an allocation or a job was tried (HEAD is GET's, added by aiohttp).
    routed = {
        (route.method, route.resource.canonical)
        for route in app.app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and re.search(r"\{(alloc_id|job_id)\}", route.resource.canonical)
    }
    tried = {(m, t.split("?")[0]) for m, t, _ in api_cases + web_cases}
    assert routed <= tried, routed - tried
    assert await _versions(app, *streams) == before
