"""The API's long polls (`?wait=`, `?timeout=`) on the allocator's own app over real HTTP, its
engine folding a real Postgres log (tests/fixtures/web_app.py): the timeouts /v1/openapi.json
documents against those the API takes, and the bound on one user's waiting requests."""

import asyncio
from typing import Any

import jsonschema_rs

from potluck.allocator.api import WAITS
from potluck.allocator.long_polls import MAX_WAITS_PER_USER
from tests.fixtures.web_app import WebApp
from tests.helpers import wait_until

#: `?timeout=` values in and out of what the API takes, each spelled as a client would.
TIMEOUTS = [
    "0",
    "0.0",
    "0.001",
    "0.5",
    "2.5",
    "30",
    "300",
    "3e2",
    "0.0001",
    "0.0009",
    "1e-300",
    "300.5",
    "-1",
    "1e9",
    # Exponents past what Python's Decimal holds: zero, and far past the bound.
    "0e99999999999999999999",
    "1e999999999999999999999",
]


async def _status(app: WebApp, who: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Authorization": f"Bearer {app.tokens[who]}"}
    async with app.http.get(f"{app.url}{path}", headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


def _timeout_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    (parameter,) = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "timeout"]
    schema: dict[str, Any] = parameter["schema"]
    return schema


async def test_the_document_takes_the_timeouts_the_api_takes_and_no_other(pages: WebApp) -> None:
    """Tried: each of TIMEOUTS as `?timeout=` of an allocation's GET and of a job's, checked
    against the parameter's schema in /v1/openapi.json and sent to the API. Before: the
    document said `minimum: 0`, so 0.0001 or 1e-300 were valid by it and a 400 from the API
    (a client or a fuzzer built from the document tripped on it). Must hold: the document
    accepts a value exactly when the API does (an allocation's GET answers 200, not 400; a
    job's, for a job that is not there, 404, not 400)."""
    alloc_id = await pages.pending("alice")
    status, document, _ = await _status(pages, "alice", "/v1/openapi.json")
    assert status == 200
    allocation = jsonschema_rs.Draft202012Validator(_timeout_schema(document, "/v1/allocations/{alloc_id}"))
    job = jsonschema_rs.Draft202012Validator(_timeout_schema(document, "/v1/jobs/{job_id}"))
    for raw in TIMEOUTS:
        status, answer, _ = await _status(pages, "alice", f"/v1/allocations/{alloc_id}?timeout={raw}")
        assert status in (200, 400), (raw, answer)
        assert allocation.is_valid(float(raw)) == (status == 200), (raw, answer)
        status, answer, _ = await _status(pages, "alice", f"/v1/jobs/j-0000?timeout={raw}")
        assert status in (404, 400), (raw, answer)
        assert job.is_valid(float(raw)) == (status == 404), (raw, answer)


async def test_one_user_holds_a_bounded_number_of_waiting_requests(pages: WebApp) -> None:
    """Tried: alice opens MAX_WAITS_PER_USER long polls on her pending allocation (`?wait=running`,
    each waiting up to 5 s), then one more; meanwhile bob waits on his, and alice asks without
    waiting; once hers have ended, she waits again. Before: nothing but the connection caps
    bounded one user's waiting requests (512 per address), each woken by every batch the
    allocator folds. Must hold: the one past the bound is refused at once, 429 TOO_MANY_WAITS
    with Retry-After, while bob's wait and alice's plain GET answer 200; the waits in the bound
    all answer 200 (pending still); and once they have ended alice's next wait is taken again,
    her count back to none."""
    mine, bobs = await pages.pending("alice"), await pages.pending("bob")
    waits = pages.app[WAITS]
    path = f"/v1/allocations/{mine}?wait=running&timeout=5"
    held = [asyncio.create_task(_status(pages, "alice", path)) for _ in range(MAX_WAITS_PER_USER)]
    try:
        await wait_until(lambda: waits.waiting("alice") == MAX_WAITS_PER_USER, 10, "alice's waits held")
        status, answer, headers = await _status(pages, "alice", path)
        assert (status, answer["error"]["code"]) == (429, "TOO_MANY_WAITS"), answer
        assert int(headers["Retry-After"]) > 0
        status, answer, _ = await _status(pages, "bob", f"/v1/allocations/{bobs}?wait=running&timeout=0.5")
        assert (status, answer["state"]) == (200, "pending"), answer
        status, answer, _ = await _status(pages, "alice", f"/v1/allocations/{mine}?wait=running&timeout=0")
        assert status == 200, answer
    finally:
        done = await asyncio.gather(*held)
    assert [(status, answer["state"]) for status, answer, _ in done] == [
        (200, "pending")
    ] * MAX_WAITS_PER_USER
    assert waits.waiting("alice") == 0
    status, answer, _ = await _status(pages, "alice", f"/v1/allocations/{mine}?wait=running&timeout=0.5")
    assert (status, answer["state"]) == (200, "pending"), answer


async def test_a_wait_refused_or_failed_gives_its_slot_back(pages: WebApp) -> None:
    """Tried: alice waits on an allocation that is not there and on bob's, many more times than
    her bound. Must hold: each is 404 NOT_FOUND with the same body for bob's and for none (the
    wait tells nothing of another user's allocation), and none keeps a slot."""
    bobs = await pages.pending("bob")
    never = "a-" + "0" * 16
    answers = set()
    for alloc_id in [bobs, never] * MAX_WAITS_PER_USER:
        status, answer, _ = await _status(
            pages, "alice", f"/v1/allocations/{alloc_id}?wait=running&timeout=5"
        )
        assert status == 404
        answers.add(repr(answer).replace(alloc_id, "ID"))
    assert len(answers) == 1, answers
    assert pages.app[WAITS].waiting("alice") == 0


async def test_a_wait_whose_client_hung_up_ends_and_gives_its_slot_back(pages: WebApp) -> None:
    """Tried: alice sends long polls on her pending allocation and on her waiting job
    (`timeout=120`) over connections she closes as soon as each is sent, twice her bound's
    worth. Before: each wait went on for its whole timeout after its client had gone, beyond
    the connection caps (its connection was closed), and held her slots: she was refused her
    own waits for two minutes. Must hold: the hung-up waits end (her count back to none long
    before their timeout), and she can wait again."""
    await pages.paused_host()
    alloc_id = await pages.pending("alice")
    headers = {"Authorization": f"Bearer {pages.tokens['alice']}"}
    body = {"tasks": 1, "cpus": 0.5, "memory": "64M", "disk": "64M", "image": "x:1", "command": ["true"]}
    async with pages.http.post(f"{pages.url}/v1/jobs", json=body, headers=headers) as r:
        job = await r.json()
        assert r.status == 201, job
    port = int(pages.url.rsplit(":", 1)[1])
    waits = pages.app[WAITS]
    for n in range(2 * MAX_WAITS_PER_USER):
        path = (
            f"/v1/allocations/{alloc_id}?wait=running&timeout=120"
            if n % 2
            else f"/v1/jobs/{job['id']}?wait=done&timeout=120"
        )
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {headers['Authorization']}\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        await wait_until(lambda: waits.waiting("alice") > 0, 10, "the wait began")
        writer.close()
        await writer.wait_closed()
    # Well within the waits' 120 s: they end with their clients, not at their timeout.
    await wait_until(lambda: waits.waiting("alice") == 0, 30, "the hung-up waits ended")
    status, answer, _ = await _status(pages, "alice", f"/v1/allocations/{alloc_id}?wait=running&timeout=0.5")
    assert (status, answer["state"]) == (200, "pending"), answer
