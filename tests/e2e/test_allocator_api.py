"""Users get capacity: the allocator's HTTP API on real hosts, engines and the event log."""

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from potluck.allocator.members import new_member_token
from potluck.allocator.users import token_hash
from potluck.contracts.allocation_events import CapacityFreed
from potluck.contracts.member_events import MemberTokenIssued, member_stream
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.user.client import Api as ClientApi
from potluck.user.client import Login
from tests.e2e.allocator_api import Api, refused_pages, small
from tests.fixtures.pool import EnrolledHost, Pool
from tests.helpers import append_raw_row


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def alice(pool: Pool, laptop: EnrolledHost, http: aiohttp.ClientSession) -> Api:
    return Api(http, pool.api, await pool.add_user("alice"))


@pytest.fixture
async def bob(pool: Pool, alice: Api, http: aiohttp.ClientSession) -> Api:
    return Api(http, pool.api, await pool.add_user("bob"))


async def test_post_runs_a_container_with_exactly_those_limits_and_delete_frees_it(
    pool: Pool, alice: Api, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    status, created = await alice.call("POST", "/v1/allocations", small(cpus=0.75, memory="96M"))
    assert status == 201, created
    assert created["host_id"] == laptop.host_id
    status, running = await alice.call("GET", f"/v1/allocations/{created['id']}?wait=running&timeout=30")
    assert status == 200
    assert running["state"] == "running", pool.logs()

    with DockerDriver(docker_engines[0].url) as driver:
        [container] = [c for c in driver.list_managed(laptop.host_id) if c.allocation_id == created["id"]]
        host_config = driver.inspect(container.container_id)["HostConfig"]
        assert host_config["NanoCpus"] == 750_000_000
        assert host_config["Memory"] == 96 << 20
        assert host_config["PidsLimit"] == 512

        _, pool_before = await alice.call("GET", "/v1/pool")
        assert pool_before["total"]["reserved"]["cpus"] == 0.75
        status, released = await alice.call("DELETE", f"/v1/allocations/{created['id']}")
        assert status == 200
        assert released["state"] == "released"
        for _ in range(100):
            if not [c for c in driver.list_managed(laptop.host_id) if c.allocation_id == created["id"]]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the released container is still there")
    _, pool_after = await alice.call("GET", "/v1/pool")
    assert pool_after["total"]["reserved"] == {"cpus": 0, "memory": 0, "disk": 0}
    status, history = await alice.call("GET", f"/v1/allocations/{created['id']}/events")
    assert [e["type"] for e in history["events"]] == [
        "AllocationRequested",
        "AllocationPlaced",
        "AllocationRunning",
        "AllocationReleased",
    ]


async def test_an_allocations_history_lists_a_row_whose_data_is_not_an_object(pool: Pool, alice: Api) -> None:
    """Tried: a row in the allocation's stream whose data is a JSON array (a hand-made INSERT,
    another writer's row), then the user's GET /v1/allocations/ID/events.
    Must hold: 200 with every event, that row listed by its type with empty data (before, the
    whole history was a 400 INVALID_FIELD "data: Input should be a valid dictionary", blaming
    the user for a field they never sent)."""
    status, created = await alice.call("POST", "/v1/allocations", small())
    assert status == 201, created
    odd = await append_raw_row(pool.store, f"alloc-{created['id']}", "AllocationTeleported", "[1, 2]", "{}")
    status, history = await alice.call("GET", f"/v1/allocations/{created['id']}/events")
    assert status == 200, history
    [entry] = [e for e in history["events"] if e["position"] == odd]
    assert (entry["type"], entry["data"]) == ("AllocationTeleported", {})
    assert history["events"][0]["type"] == "AllocationRequested"


async def test_one_user_cannot_see_or_change_anothers_allocations(alice: Api, bob: Api) -> None:
    _, mine = await alice.call("POST", "/v1/allocations", small())
    path = f"/v1/allocations/{mine['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("DELETE", "", None),
        ("POST", "/extend", {"by": 60}),
        ("GET", "/events", None),
    ):
        status, answer = await bob.call(method, path + suffix, body)
        assert status == 404, (method, suffix, answer)
        assert answer["error"]["code"] == "NOT_FOUND"
    _, listed = await bob.call("GET", "/v1/allocations")
    assert listed["allocations"] == []
    status, still = await alice.call("GET", path)
    assert status == 200
    assert still["state"] in ("placed", "running")


async def test_another_users_job_and_credentials_other_than_a_bearer_header_open_nothing(
    pool: Pool, laptop: EnrolledHost, alice: Api, bob: Api, http: aiohttp.ClientSession
) -> None:
    """Tried: bob reads, long-polls, lists the tasks of and cancels alice's job; alice's token
    sent in the query (`?token=`, `?access_token=`), in a cookie, or as a member's web token
    would be; alice's POST on her allocation asking for DELETE by X-HTTP-Method-Override.
    Must hold: bob gets for her job exactly the answer of a job that never was; each misplaced
    credential is refused (400 naming the parameter, or 401), the member's token is no user's;
    the override is a 405; alice's job and allocation are still running, nothing cancelled."""
    _, allocated = await alice.call("POST", "/v1/allocations", small())
    job = small(cpus=0.2, command=["sleep", "600"], tasks=1)
    status, submitted = await alice.call("POST", "/v1/jobs", job)
    assert status == 201, submitted
    never = "j-" + "0" * (len(submitted["id"]) - 2)
    for method, suffix in (("GET", ""), ("GET", "?wait=done&timeout=1"), ("GET", "/tasks"), ("DELETE", "")):
        theirs = await bob.call(method, f"/v1/jobs/{submitted['id']}{suffix}")
        unknown = await bob.call(method, f"/v1/jobs/{never}{suffix}")
        assert theirs[0] == 404, (method, suffix, theirs)
        # The same answer, but for the id it repeats.
        assert json.dumps(unknown).replace(never, submitted["id"]) == json.dumps(theirs), (method, suffix)
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    for name in ("token", "access_token"):
        async with http.get(f"{pool.api}/v1/allocations?{name}={token}") as response:
            answer = await response.json()
            assert (response.status, answer["error"]["field"]) == (400, name), answer
    member = new_member_token()  # the web token of laptop's member
    issued = MemberTokenIssued(token_sha256=token_hash(member), host_ids=[laptop.host_id])
    await pool.store.append(member_stream(laptop.host_id), [issued])
    for headers in (
        {"Cookie": f"token={token}; potluck_session={token}"},
        {"Authorization": f"Bearer {member}"},
        {"Authorization": f"Token {token}"},
    ):
        async with http.get(f"{pool.api}/v1/allocations", headers=headers) as response:
            assert response.status == 401, headers
            assert (await response.json())["error"]["code"] == "UNAUTHENTICATED"
    override = {**alice.headers, "X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE"}
    async with http.post(f"{pool.api}/v1/allocations/{allocated['id']}", headers=override) as response:
        assert response.status == 405
    status, still = await alice.call("GET", f"/v1/allocations/{allocated['id']}")
    assert (status, still["state"] in ("placed", "running")) == (200, True), still
    status, job_now = await alice.call("GET", f"/v1/jobs/{submitted['id']}")
    assert (status, job_now["state"]) == (200, "running"), job_now


async def test_a_missing_or_wrong_token_gets_401(pool: Pool, alice: Api, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        async with http.get(pool.api + "/v1/allocations", headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "UNAUTHENTICATED"


async def test_quota_bounds_what_one_user_holds(pool: Pool, alice: Api, http: aiohttp.ClientSession) -> None:
    carol = Api(http, pool.api, await pool.add_user("carol", allocations=1, cpus=1.0))
    status, _ = await carol.call("POST", "/v1/allocations", small())
    assert status == 201
    status, answer = await carol.call("POST", "/v1/allocations", small())
    assert status == 403
    assert answer["error"]["code"] == "QUOTA_EXCEEDED"


async def test_concurrent_requests_of_one_user_never_pass_the_quota(
    pool: Pool, alice: Api, http: aiohttp.ClientSession
) -> None:
    """Nine requests at once from a user allowed three: the allocator decides each while the
    others' appends are still in flight, so it must count those. Exactly three are accepted
    and the other six are refused with QUOTA_EXCEEDED; the log holds three allocations."""
    dave = Api(http, pool.api, await pool.add_user("dave", allocations=3, cpus=4.0))
    answers = await asyncio.gather(
        *(dave.call("POST", "/v1/allocations", small(cpus=0.25)) for _ in range(9))
    )
    accepted = [a for status, a in answers if status in (201, 202)]
    refused = [a for status, a in answers if status == 403]
    assert len(accepted) == 3, answers
    assert len(refused) == 6, answers
    assert {a["error"]["code"] for a in refused} == {"QUOTA_EXCEEDED"}
    status, listed = await dave.call("GET", "/v1/allocations")
    assert status == 200
    assert sorted(a["id"] for a in listed["allocations"]) == sorted(a["id"] for a in accepted)


async def test_a_request_that_fits_the_pool_but_not_its_free_capacity_waits_then_runs(
    pool: Pool, alice: Api
) -> None:
    status, big = await alice.call("POST", "/v1/allocations", small(cpus=1.5))
    assert status == 201
    status, waiting = await alice.call("POST", "/v1/allocations", small(cpus=1.0))
    assert status == 202
    assert waiting["state"] == "pending"
    await alice.call("DELETE", f"/v1/allocations/{big['id']}")
    _, now = await alice.call("GET", f"/v1/allocations/{waiting['id']}?wait=running&timeout=30")
    assert now["state"] == "running", pool.logs()


async def test_a_pending_request_is_refused_when_its_queue_timeout_passes(pool: Pool, alice: Api) -> None:
    await alice.call("POST", "/v1/allocations", small(cpus=2.0))
    _, waiting = await alice.call("POST", "/v1/allocations", small(cpus=1.0, queue_timeout=1))
    assert waiting["state"] == "pending"
    _, later = await alice.call("GET", f"/v1/allocations/{waiting['id']}?wait=refused&timeout=15")
    assert later["state"] == "refused"
    assert later["reason"] == "QUEUE_TIMEOUT"
    assert later["detail"] == "no capacity freed within 1s", later
    assert later["waiting"] is None


async def test_lifetime_expiry_stops_the_container_and_frees_capacity(
    pool: Pool, alice: Api, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    # Long enough to be seen running on a loaded machine (a start took over 3 s beside another
    # test), short enough to see it end.
    _, created = await alice.call("POST", "/v1/allocations", small(lifetime=8))
    _, running = await alice.call("GET", f"/v1/allocations/{created['id']}?wait=running&timeout=30")
    assert running["state"] == "running", running
    _, expired = await alice.call("GET", f"/v1/allocations/{created['id']}?wait=expired&timeout=30")
    assert expired["state"] == "expired"
    with DockerDriver(docker_engines[0].url) as driver:
        for _ in range(100):
            if not [c for c in driver.list_managed(laptop.host_id) if c.allocation_id == created["id"]]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the expired container is still there")
    _, after = await alice.call("GET", "/v1/pool")
    assert after["total"]["reserved"]["cpus"] == 0


async def test_extend_moves_the_expiry(alice: Api) -> None:
    _, created = await alice.call("POST", "/v1/allocations", small(lifetime="1h"))
    status, extended = await alice.call("POST", f"/v1/allocations/{created['id']}/extend", {"by": "30m"})
    assert status == 200
    assert extended["expires_at"] > created["expires_at"]
    # Less than a second is no extension: refused, naming `by` and the least it takes.
    for by in (1e-300, 0.5, "0.0001h", 0):
        status, refused = await alice.call("POST", f"/v1/allocations/{created['id']}/extend", {"by": by})
        assert status == 400, (by, refused)
        assert (refused["error"]["code"], refused["error"]["field"]) == ("INVALID_FIELD", "by"), refused
        assert "must be from 1 to 604800 seconds" in refused["error"]["message"], refused
    _, after = await alice.call("GET", f"/v1/allocations/{created['id']}")
    assert after["expires_at"] == extended["expires_at"]


async def test_a_lost_host_makes_its_allocations_lost_and_frees_capacity(
    pool: Pool, alice: Api, laptop: EnrolledHost
) -> None:
    import os
    import signal

    _, created = await alice.call("POST", "/v1/allocations", small())
    await alice.call("GET", f"/v1/allocations/{created['id']}?wait=running&timeout=30")
    assert laptop.process is not None
    assert laptop.process.pid is not None
    os.kill(laptop.process.pid, signal.SIGSTOP)
    try:
        _, lost = await alice.call("GET", f"/v1/allocations/{created['id']}?wait=lost&timeout=30")
    finally:
        os.kill(laptop.process.pid, signal.SIGCONT)
    assert lost["state"] == "lost"
    freed = [
        r for r in await pool.store.read_stream(f"capacity-{laptop.host_id}") if r.type == "CapacityFreed"
    ]
    assert len(freed) == 1
    assert CapacityFreed.model_validate(freed[0].data).alloc_id == created["id"]


async def test_query_parameters_methods_and_numbers_are_as_the_published_schema_says(
    pool: Pool, alice: Api, http: aiohttp.ClientSession
) -> None:
    """What is tried: the cases where the served OpenAPI document and the API disagreed: a
    `timeout` out of its bounds without `wait`, a parameter given twice or one the endpoint does
    not take, an unsupported method, a size written as a JSON float, and the error statuses of
    each operation. What must hold: each bad parameter is a 400 naming it, within milliseconds;
    a 405 carries `Allow`; an integral float is a size; size and duration texts have a maxLength
    in the schema; 429 is declared where the API can answer it; nothing is recorded by the
    refused requests."""
    _, created = await alice.call("POST", "/v1/allocations", small(disk=float(64 << 20)))
    assert created["disk"] == 64 << 20, created
    path = f"/v1/allocations/{created['id']}"
    _, running = await alice.call("GET", f"{path}?wait=running&timeout=30")
    assert running["state"] == "running"  # nothing more to record until it ends
    head = await pool.store.head_position()
    for query in (
        *("timeout=301", "timeout=-1", "timeout=nan", "timeout=inf", "wait=running&timeout=1e9"),
        # Spellings Python's float() takes and a JSON number is not.
        *("timeout=1_0", "timeout=%205", "timeout=infinity", "timeout=0x10", "timeout=", "timeout=1."),
    ):
        started = asyncio.get_running_loop().time()
        status, answer = await alice.call("GET", f"{path}?{query}")
        assert status == 400, (query, answer)
        assert answer["error"]["field"] == "timeout"
        assert asyncio.get_running_loop().time() - started < 1.0
    status, answer = await alice.call("GET", "/v1/allocations?state=nonsense")
    assert (status, answer["error"]["field"]) == (400, "state")
    # A parameter given twice: the second value would go unread, so neither is taken.
    for target, name in (
        ("/v1/allocations?state=running&state=nonsense", "state"),
        ("/v1/allocations?limit=1&limit=2", "limit"),
        (f"{path}?wait=running&timeout=1&wait=nonsense", "wait"),
    ):
        status, answer = await alice.call("GET", target)
        assert (status, answer["error"]["field"]) == (400, name), (target, answer)
        assert "more than once" in answer["error"]["message"]
    # One the endpoint does not take (a typo, or another endpoint's): refused, not ignored.
    for target, name in (
        ("/v1/allocations?stat=running", "stat"),
        (f"{path}?limit=1", "limit"),
        ("/v1/jobs?state=running", "state"),
        ("/v1/pool?verbose=1", "verbose"),
    ):
        status, answer = await alice.call("GET", target)
        assert (status, answer["error"]["field"]) == (400, name), (target, answer)
        assert "not a query parameter" in answer["error"]["message"]
    status, answer = await alice.call("DELETE", f"{path}?force=1")
    assert (status, answer["error"]["field"]) == (400, "force"), answer
    assert await pool.store.head_position() == head  # nothing of these was recorded

    for method, target in (("PATCH", path), ("PUT", "/v1/allocations"), ("TRACE", "/v1/pool")):
        async with http.request(method, pool.api + target, headers=alice.headers) as response:
            assert response.status == 405, (method, target)
            assert response.headers.get("Allow"), (method, target)
            assert (await response.json())["error"]["code"] == "METHOD_NOT_ALLOWED"
    async with http.request("PATCH", pool.api + path, headers=alice.headers) as response:
        assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}

    async with http.get(pool.api + "/v1/openapi.json") as response:
        document = await response.json()
    create = document["components"]["schemas"]["CreateAllocation"]["properties"]
    extend = document["components"]["schemas"]["ExtendAllocation"]["properties"]
    for name, schema in (
        *((f, create[f]) for f in ("memory", "disk", "lifetime", "queue_timeout")),
        ("by", extend["by"]),
    ):
        [text] = [s for s in schema["anyOf"] if s["type"] == "string"]
        assert text["maxLength"] <= 32, name
        assert text["pattern"], name
    # Durations: nothing between 0 and a second (0 only where it means none: no wait, no keep).
    for name, schema, zero in (
        ("lifetime", create["lifetime"], False),
        ("queue_timeout", create["queue_timeout"], True),
        ("keep_for", create["keep_for"], True),
        ("by", extend["by"], False),
    ):
        [number] = [s for s in schema["anyOf"] if s["type"] == "number" and "const" not in s]
        assert number["minimum"] == 1, name
        assert ({"type": "number", "const": 0} in schema["anyOf"]) == zero, name
    # A command's first word names a program: the schema says so, as the server checks it.
    [command] = [s for s in create["command"]["anyOf"] if s["type"] == "array"]
    assert command["prefixItems"][0]["pattern"], command
    timeout = next(
        p
        for p in document["paths"]["/v1/allocations/{alloc_id}"]["get"]["parameters"]
        if p["name"] == "timeout"
    )
    # 0, or from a millisecond to 300 s (tests/integration/test_long_polls.py holds it to the API).
    [waits] = [s for s in timeout["schema"]["anyOf"] if "const" not in s]
    assert (waits["minimum"], waits["maximum"]) == (0.001, 300)
    assert {"type": "number", "const": 0} in timeout["schema"]["anyOf"]
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if operation.get("security"):
                assert "429" in operation["responses"], operation["operationId"]
                assert "401" in operation["responses"], operation["operationId"]
    assert await pool.store.head_position() == head


async def test_a_disk_quota_bounds_what_one_user_holds(
    pool: Pool, alice: Api, http: aiohttp.ClientSession
) -> None:
    """What is tried: a user whose disk quota is 100M asks for 64M of disk twice (the pool has
    room for both). What must hold: the second request is refused with QUOTA_EXCEEDED naming
    disk, and records nothing."""
    erin = Api(http, pool.api, await pool.add_user("erin", disk_bytes=100 << 20))
    status, first = await erin.call("POST", "/v1/allocations", small(disk="64M"))
    assert status == 201
    _, running = await erin.call("GET", f"/v1/allocations/{first['id']}?wait=running&timeout=30")
    assert running["state"] == "running"  # nothing more to record until it ends
    head = await pool.store.head_position()
    status, answer = await erin.call("POST", "/v1/allocations", small(disk="64M"))
    assert status == 403, answer
    assert (answer["error"]["code"], answer["error"]["field"]) == ("QUOTA_EXCEEDED", "disk")
    assert await pool.store.head_position() == head


async def test_failed_authentications_are_cheap_and_limited_per_address(
    pool: Pool, alice: Api, http: aiohttp.ClientSession
) -> None:
    """What is tried: from 127.0.0.1, wrong tokens (malformed, and shaped like real ones) until
    the address is locked out; then alice's valid token from 127.0.0.1 and from 127.0.0.2.
    What must hold: each failure is a quick 401; after 30 failures the address gets 429 with a
    Retry-After of at most a minute for any token no user holds, well-shaped or not, while
    alice's valid token still works from that address and from the other; nothing is recorded."""
    head = await pool.store.head_position()
    wrong = ["nope", "pl_" + "A" * 43]
    started = asyncio.get_running_loop().time()
    for i in range(30):
        headers = {"Authorization": f"Bearer {wrong[i % 2]}"}
        async with http.get(pool.api + "/v1/allocations", headers=headers) as response:
            assert response.status == 401, i
    # 30 failures, half of them catching up with the log once: well under the old 30 s a piece.
    assert asyncio.get_running_loop().time() - started < 10
    for guess in wrong:
        async with http.get(
            pool.api + "/v1/allocations", headers={"Authorization": f"Bearer {guess}"}
        ) as response:
            assert response.status == 429
            assert 0 < int(response.headers["Retry-After"]) <= 60
            assert (await response.json())["error"]["code"] == "TOO_MANY_FAILURES"
    # One script looping on a stale token must not lock out everyone behind its address.
    async with http.get(pool.api + "/v1/allocations", headers=alice.headers) as response:
        assert response.status == 200, await response.text()
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=connector) as elsewhere,
        elsewhere.get(pool.api + "/v1/allocations", headers=alice.headers) as response,
    ):
        assert response.status == 200
    assert await pool.store.head_position() == head


async def _walk(user: Api, path: str, rows: str, limit: int, query: str = "") -> list[list[str]]:
    """The ids of each page of the list, following `next` from the first page to the last."""
    pages: list[list[str]] = []
    after = ""
    while True:
        status, page = await user.call("GET", f"{path}?limit={limit}{query}{after}")
        assert status == 200, page
        pages.append([row["id"] for row in page[rows]])
        if page["next"] is None:
            return pages
        assert page["next"] == pages[-1][-1]
        after = f"&after={page['next']}"


async def _released(user: Api) -> str:
    """A new allocation of the user's, released at once (its row stays in the list)."""
    status, created = await user.call("POST", "/v1/allocations", small(cpus=0.25))
    assert status in (201, 202), created
    status, _ = await user.call("DELETE", f"/v1/allocations/{created['id']}")
    assert status == 200
    return str(created["id"])


async def test_a_user_walks_the_pages_of_their_allocations_and_sees_each_once(
    pool: Pool, alice: Api, bob: Api
) -> None:
    """Tried: alice has 7 allocations and bob 2; alice walks pages of 3 and makes an 8th between the
    first and the second page; then pages of 8, of 2 with `state=released`, the default page, and
    the CLI's client following `next` two rows at a time and stopping after the first 5.
    Must hold: each page holds at most `limit` rows and `next` is its last id (null on the last);
    the walk shows each of alice's 8 exactly once, oldest request first, the new one last, and
    none of bob's; a page of exactly all her rows is the last (`next` null); the filter keeps
    paging; the client's walk and its first 5 agree with the API's order."""
    mine = [await _released(alice) for _ in range(7)]
    theirs = [await _released(bob) for _ in range(2)]

    status, first = await alice.call("GET", "/v1/allocations?limit=3")
    assert status == 200
    assert [a["id"] for a in first["allocations"]] == mine[:3]
    assert first["next"] == mine[2]
    mine.append(await _released(alice))  # made while alice pages: it comes after, on a later page
    pages = [mine[:3]]
    after = first["next"]
    while after is not None:
        _, page = await alice.call("GET", f"/v1/allocations?limit=3&after={after}")
        pages.append([a["id"] for a in page["allocations"]])
        after = page["next"]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [a for p in pages for a in p] == mine
    assert not set(theirs) & {a for p in pages for a in p}

    assert await _walk(alice, "/v1/allocations", "allocations", 8) == [mine]
    released = await _walk(alice, "/v1/allocations", "allocations", 2, "&state=released")
    assert [a for p in released for a in p] == mine
    assert await _walk(alice, "/v1/allocations", "allocations", 2, "&state=running") == [[]]
    status, default = await alice.call("GET", "/v1/allocations")
    assert [a["id"] for a in default["allocations"]] == mine
    assert default["next"] is None
    _, bobs = await bob.call("GET", "/v1/allocations")
    assert [a["id"] for a in bobs["allocations"]] == theirs

    login = Login(pool.api, alice.headers["Authorization"].removeprefix("Bearer "))
    walked = await ClientApi(login).rows("/v1/allocations", "allocations", page_rows=2)
    assert [a["id"] for a in walked] == mine
    first_five = await ClientApi(login).rows("/v1/allocations", "allocations", most=5, page_rows=2)
    assert [a["id"] for a in first_five] == mine[:5]


async def test_bad_page_requests_get_a_clear_400_or_404_and_change_nothing(alice: Api, bob: Api) -> None:
    """Tried: `limit` 0, 1001, -1, 1.5, x, empty and +5; `after` bob's allocation, an id that
    never was and an empty one, alone and with a valid limit; then `limit` 1 and 1000 and her
    own last id. Must hold: each bad limit is a 400 INVALID_FIELD naming the field, each `after`
    not hers a 404 NOT_FOUND naming `after`; bob's id and the unknown one get the very same
    answer (his id's existence is not told); the edges are
    accepted (after her last id: an empty last page); alice's list is the same afterwards."""
    mine = await _released(alice)
    theirs = await _released(bob)
    _, before = await alice.call("GET", "/v1/allocations")
    await refused_pages(
        alice,
        "/v1/allocations",
        [(f"limit={bad}", "limit") for bad in ("0", "1001", "-1", "1.5", "x", "", "%2B5")],
        [f"after={theirs}", "after=a-never-was", "after=", f"limit=5&after={theirs}"],
        theirs,
        "a-never-was",
    )
    for limit in (1, 1000):
        status, edge = await alice.call("GET", f"/v1/allocations?limit={limit}")
        assert (status, edge) == (200, before)
    status, last = await alice.call("GET", f"/v1/allocations?after={mine}")
    assert status == 200
    assert last == {"allocations": [], "next": None}
    _, after = await alice.call("GET", "/v1/allocations")
    assert after == before
