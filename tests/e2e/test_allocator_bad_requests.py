"""Bad request bodies to the allocator's HTTP API: a clear error each, and nothing recorded.

Each case leaves the pool as it found it, which its last assertion checks, so all of them share
one pool (`module_pool`) with one host and one user, started once for the module.
"""

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from multidict import CIMultiDict

from potluck.allocator.authentication import FailureWindow
from potluck.allocator.connection_caps import MAX_PER_ADDRESS
from potluck.contracts.registry import TOKEN_PATH
from potluck.kernel.sizes import format_size
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.ports import free_port
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.allocator_api import Api, small
from tests.e2e.conftest import start_laptop
from tests.fixtures.pool import Pool
from tests.fixtures.weak_keys import DSA_KEY, RSA_1024_KEY
from tests.helpers import answer_body


@pytest.fixture(scope="module")
async def shared(module_pool: Pool, docker_engines: list[DockerEngine]) -> AsyncIterator[tuple[Pool, Api]]:
    """The module's pool, a host on the first engine, and alice with her own HTTP session."""
    await start_laptop(module_pool, docker_engines[0])
    token = await module_pool.add_user("alice")
    async with aiohttp.ClientSession() as http:
        yield module_pool, Api(http, module_pool.api, token)


#: The bounds of `impatient`'s allocator on slow clients, seconds: its production defaults are
#: 30 (request_bodies.BODY_READ_S, service.IDLE_CONNECTION_S) and 10 (service.LINGERING_S),
#: which the cases that wait for them waited in full. Long enough that a trickle sends
#: several pieces (a byte every 2 s, a header every 3 s) before it is cut off.
BODY_READ_S = 8.0
IDLE_CONNECTION_S = 8.0
LINGERING_S = 1.0


@pytest.fixture(scope="module")
async def impatient(shared: tuple[Pool, Api]) -> AsyncIterator[tuple[Pool, Api]]:
    """A second allocator of the module's pool (a replica, as test_replicas runs), with short
    bounds on slow clients (--body-read-timeout, --idle-connection-timeout, --lingering-time),
    and alice's session against it."""
    pool, alice = shared
    port = free_port()
    replica = pool.start_allocator(
        "allocator-impatient",
        port=port,
        relay=False,
        options=[
            *("--body-read-timeout", str(BODY_READ_S)),
            *("--idle-connection-timeout", str(IDLE_CONNECTION_S)),
            *("--lingering-time", str(LINGERING_S)),
        ],
    )
    try:
        await pool.wait_api(port=port)
        token = alice.headers["Authorization"].removeprefix("Bearer ")
        yield pool, Api(alice.http, f"http://127.0.0.1:{port}", token)
    finally:
        # As a crash would (a stop is test_allocator_stop's); the module's own allocator serves
        # on either way.
        await asyncio.to_thread(replica.kill)


_BODY_USERS = itertools.count()


@pytest.fixture
async def hal(shared: tuple[Pool, Api]) -> tuple[Pool, Api]:
    """A user of its own for each bad-bodies row: the rows together are more than one user's burst
    of changes (50, then 5 a second), and each row is to meet the API, not its rate limit."""
    pool, alice = shared
    return pool, Api(alice.http, pool.api, await pool.add_user(f"hal{next(_BODY_USERS)}"))


@pytest.fixture(scope="module")
async def erin(shared: tuple[Pool, Api]) -> tuple[Pool, Api]:
    """A user of her own for the bodies' cases: the module's other cases spend alice's burst of
    changes (50, then 5 a second), and under load the last of them met RATE_LIMITED."""
    pool, alice = shared
    return pool, Api(alice.http, pool.api, await pool.add_user("erin"))


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ("{not json", 400, "MALFORMED_JSON", None),
        ({"cpus": 1}, 400, "INVALID_FIELD", "memory"),
        (small(cpus=-1), 400, "INVALID_FIELD", "cpus"),
        (small(memory="lots"), 400, "INVALID_FIELD", "memory"),
        (small(surprise=True), 400, "INVALID_FIELD", "surprise"),
        (small(ssh_keys=["not a key"]), 400, "INVALID_FIELD", "ssh_keys"),
        # Keys the gateway refuses at login (a DSA key, a 1024-bit RSA one) are refused here first:
        # well-formed lines (the schema's), so a 422 as for a request no host could hold.
        (small(ssh_keys=[DSA_KEY]), 422, "INVALID_SSH_KEY", "ssh_keys"),
        (small(ssh_keys=[RSA_1024_KEY]), 422, "INVALID_SSH_KEY", "ssh_keys"),
        # A line that holds no whole key (its ed25519 key 2 bytes, not 32): no one could log in
        # with it, and the allocation was made all the same.
        (small(ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ3 me"]), 422, "INVALID_SSH_KEY", "ssh_keys"),
        (small(ssh_keys=["ssh-rsa DApwqt"]), 422, "INVALID_SSH_KEY", "ssh_keys"),  # schemathesis's
        # What the published schema calls a boolean, a number or a name is one (no lax coercion).
        (small(network=0), 400, "INVALID_FIELD", "network"),
        (small(cpus="1"), 400, "INVALID_FIELD", "cpus"),
        (small(env={"BAD NAME": "x"}), 400, "INVALID_FIELD", "env"),
        (small(env={"A\n": "x"}), 400, "INVALID_FIELD", "env"),
        # Postgres cannot store NUL or a lone surrogate; Docker cannot pass NUL on.
        (small(command=["sh", "-c", "echo \u0000"]), 400, "INVALID_FIELD", "command"),
        (small(env={"A": "\u0000"}), 400, "INVALID_FIELD", "env"),
        # Docker would run the image's own CMD for [] (a shell that exits at once): a task that
        # ends before anyone sees it, where leaving `command` out asks for an interactive one.
        (small(command=[]), 400, "INVALID_FIELD", "command"),
        (
            '{"cpus": 1, "memory": "64M", "image": "x", "command": ["\\ud8e6"]}',
            400,
            "MALFORMED_JSON",
            "command",
        ),
        # A size text is checked against the pattern the schema publishes: bounds included.
        (small(memory="15M"), 400, "INVALID_FIELD", "memory"),
        (small(memory=0), 400, "INVALID_FIELD", "memory"),
        (small(memory="0.5G"), 400, "INVALID_FIELD", "memory"),
        (small(disk=" 64M"), 400, "INVALID_FIELD", "disk"),
        (small(lifetime="0s"), 400, "INVALID_FIELD", "lifetime"),
        (small(lifetime="7.5d"), 400, "INVALID_FIELD", "lifetime"),
        # Durations: nothing between 0 and a second; 0 only where it means none (wait, keep).
        (small(lifetime=1e-300), 400, "INVALID_FIELD", "lifetime"),
        (small(lifetime=0.5), 400, "INVALID_FIELD", "lifetime"),
        (small(lifetime="0.0001h"), 400, "INVALID_FIELD", "lifetime"),
        (small(queue_timeout=1e-300), 400, "INVALID_FIELD", "queue_timeout"),
        (small(queue_timeout="0.01m"), 400, "INVALID_FIELD", "queue_timeout"),
        (small(keep_for=5e-324), 400, "INVALID_FIELD", "keep_for"),
        # A command's first word names the program: Docker takes "" or " sleep" and fails only
        # when the container starts.
        (small(command=[""]), 400, "INVALID_FIELD", "command"),
        (small(command=[" \t"]), 400, "INVALID_FIELD", "command"),
        (small(command=[" sleep", "3600"]), 400, "INVALID_FIELD", "command"),
        (small(command=["", "sleep", "3600"]), 400, "INVALID_FIELD", "command"),
        (small(cpus=64), 422, "EXCEEDS_ANY_HOST", "cpus"),
        (small(memory="512G"), 422, "EXCEEDS_ANY_HOST", "memory"),
        (small(constraints={"gpu": "yes"}), 422, "NO_HOST_MATCHES", "constraints"),
        # A value longer than any host's label may be (host_labels' bound) could never match.
        (small(constraints={"gpu": "y" * 129}), 400, "INVALID_FIELD", "constraints"),
        # A share below Docker's floor would run with NanoCpus=0: no CPU limit at all.
        (small(cpus=1e-10), 400, "INVALID_FIELD", "cpus"),
        (small(cpus=5e-324), 400, "INVALID_FIELD", "cpus"),
        # Long texts are refused before any matching (they once took seconds of the event loop).
        (small(memory="1" + " " * 32_000 + "x"), 400, "INVALID_FIELD", "memory"),
        (small(lifetime="1" + " " * 32_000 + "h"), 400, "INVALID_FIELD", "lifetime"),
        (small(memory="9" * 300), 400, "INVALID_FIELD", "memory"),
        (small(lifetime=10**400), 400, "INVALID_FIELD", "lifetime"),
        # JSON that Python's parser gives up on is malformed JSON, not a crash.
        ('{"cpus": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "MALFORMED_JSON", None),
        # What the parser cannot read as written names the field that holds it, as the schema does.
        ('{"cpus": 1, "memory": ' + "9" * 5_000 + "}", 400, "MALFORMED_JSON", "memory"),
        ('{"cpus": NaN, "memory": "64M"}', 400, "MALFORMED_JSON", "cpus"),
        # Past a float's largest: infinity, once refused as "at most 256", as if 1e309 were a number.
        ('{"cpus": 1e309, "memory": "64M"}', 400, "MALFORMED_JSON", "cpus"),
        ('{"cpus": 1, "memory": "64M", "lifetime": -1e400}', 400, "MALFORMED_JSON", "lifetime"),
        # A whole number a float does not hold exactly is that number: the field's bound refuses
        # it (once "1e308 cannot be read exactly", as if the client had written more digits).
        (small(cpus=1e308), 400, "INVALID_FIELD", "cpus"),
        (small(lifetime=1e308), 400, "INVALID_FIELD", "lifetime"),
        (small(memory=1e300), 400, "INVALID_FIELD", "memory"),
        # JSON's own words for what is not a size or a duration, not Python's (True, NoneType).
        (small(memory=True), 400, "INVALID_FIELD", "memory"),
        (small(lifetime=None), 400, "INVALID_FIELD", "lifetime"),
        ('{"cpus": 1, "memory": "64M", "env": {"A": "1", "A": "2"}}', 400, "MALFORMED_JSON", "env"),
        ('{"cpus": 1, "memory": "64M", "cpus": 0.5}', 400, "MALFORMED_JSON", "cpus"),
        ('{"cpus": 1, "memory": "64M", "lifetime": -Infinity}', 400, "MALFORMED_JSON", "lifetime"),
    ],
)
async def test_bad_requests_get_a_clear_error_and_nothing_is_recorded(
    hal: tuple[Pool, Api], body: Any, status: int, code: str, field: str | None
) -> None:
    """What is tried: one bad request body. What must hold: the status and error code the API
    publishes for it, naming the field, with a message; the log's head does not move (so the
    next case meets the same pool)."""
    pool, alice = hal
    head = await pool.store.head_position()
    if isinstance(body, str):
        got_status, answer = await _post_as_written(alice, body)
    else:
        got_status, answer = await alice.call("POST", "/v1/allocations", body)
    assert got_status == status, answer
    assert answer["error"]["code"] == code
    assert answer["error"].get("field") == field
    assert answer["error"]["message"]
    assert "sys." not in answer["error"]["message"], "names no interpreter setting"
    # The check's own words, not pydantic's before them ("memory: Value error, the size ...").
    assert "Value error" not in answer["error"]["message"], answer
    # A JSON body's values in JSON's words (true, null), not Python's.
    assert not re.search(r"\b(True|False|None|NoneType)\b", answer["error"]["message"]), answer
    assert await pool.store.head_position() == head


async def test_a_job_whose_ssh_key_holds_no_whole_key_is_refused_and_appends_nothing(
    hal: tuple[Pool, Api],
) -> None:
    """What is tried: POST /v1/jobs registering the auditor's cut-short ed25519 line (2 bytes of
    key), then a DSA key. What must hold: 422 INVALID_SSH_KEY naming ssh_keys and what is wrong
    with the key, as for an allocation; no job is recorded."""
    pool, user = hal
    head = await pool.store.head_position()
    for line, said in (
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ3 me", "the key data is shorter than it says"),
        (DSA_KEY, "DSA keys are refused"),
    ):
        status, answer = await user.call(
            "POST", "/v1/jobs", small(tasks=2, command=["true"], ssh_keys=[line])
        )
        assert (status, answer["error"]["code"], answer["error"]["field"]) == (
            422,
            "INVALID_SSH_KEY",
            "ssh_keys",
        )
        assert said in answer["error"]["message"], answer
    assert await pool.store.head_position() == head


async def test_a_request_no_host_could_hold_names_what_the_largest_host_gives(
    shared: tuple[Pool, Api],
) -> None:
    """What is tried: 64 cpus, then the host's cpus with 512G of memory, on the module's pool of
    one host. What must hold: 422 EXCEEDS_ANY_HOST naming the field, and the message says the
    most that host donates (what the user could ask for instead); nothing is recorded."""
    pool, first = shared
    # A user of its own: the module's other cases spend alice's burst of changes (erin's note).
    alice = Api(first.http, pool.api, await pool.add_user("fay"))
    _, answer = await alice.call("GET", "/v1/pool")
    donated = answer["hosts"][0]["donated"]
    head = await pool.store.head_position()
    status, refused = await alice.call("POST", "/v1/allocations", small(cpus=64))
    assert (status, refused["error"]["field"]) == (422, "cpus"), refused
    most = f"{donated['cpus']:g} cpu" + ("" if donated["cpus"] == 1 else "s")
    assert refused["error"]["message"].endswith(f"; the most a host donates is {most}"), refused
    status, refused = await alice.call("POST", "/v1/allocations", small(cpus=donated["cpus"], memory="512G"))
    assert (status, refused["error"]["field"]) == (422, "memory"), refused
    assert f"donates is {format_size(donated['memory'])}" in refused["error"]["message"], refused
    assert await pool.store.head_position() == head


async def test_an_unknown_id_of_any_length_is_answered_404_without_echoing_it_whole(
    shared: tuple[Pool, Api],
) -> None:
    """What is tried: GET and DELETE of an allocation, GET of a job, and GET of an endpoint, each
    named by a 5,000-character id. Before, the 404's message held the id whole. What must hold:
    404 NOT_FOUND, with the id's first 64 characters and no more (the endpoint's path 200)."""
    pool, first = shared
    alice = Api(first.http, pool.api, await pool.add_user("gus"))  # a burst of its own (erin's note)
    long_id = "a-" + "x" * 4_998
    for method, path, shown in (
        ("GET", f"/v1/allocations/{long_id}", 64),
        ("DELETE", f"/v1/allocations/{long_id}", 64),
        ("GET", f"/v1/jobs/{long_id}", 64),
        ("GET", f"/v1/{long_id}", 200),
    ):
        status, answer = await alice.call(method, path)
        assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), (method, path[:80], answer)
        message = answer["error"]["message"]
        assert "x" * (shown - 10) in message, message[:300]
        assert "x" * shown not in message, (method, len(message))


async def test_numbers_are_taken_as_the_schema_says_and_a_refused_one_says_what_is_allowed(
    shared: tuple[Pool, Api],
) -> None:
    """Tried: `?timeout=` of GET /v1/allocations/{id}, as numbers TIMEOUT_SCHEMA takes (0, or
    0.001 to 300) in spellings a JSON number has (many fraction digits, long exponents), and
    as ones it refuses though a float reads them as in bounds (1e-400 is a float's 0,
    300.0000000000000000001 a float's 300); and bodies whose `queue_timeout` or `keep_for` is
    such a number nearer 0 than a float holds. Must hold: each timeout the schema takes passes
    the check (the unknown id's 404, not a 400); each other is a 400 naming `timeout` whose
    message says the bounds and the spelling; each such body is a 400 saying to write 0 or a
    larger number, not an allocation that waits 0 s or keeps nothing; nothing is recorded."""
    pool, alice = shared
    # A user of its own: the module's cases spend most of alice's burst of changes.
    dora = Api(alice.http, pool.api, await pool.add_user("dora"))
    head = await pool.store.head_position()
    path = "/v1/allocations/a-0000000000000000000000000000000000"
    taken = ("0", "0.0", "2.5" + "0" * 40 + "1", "0.001", "1e-0003", "3E%2B2", "0.5" + "9" * 60, "300.0")
    for spelling in taken:
        status, answer = await dora.call("GET", f"{path}?timeout={spelling}")
        assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), (spelling, answer)
    refused = (
        "1e-400",
        "0." + "0" * 40 + "1",
        "300.0000000000000000001",
        "3e200000",
        "-0",
        "%2B5",
        "1e99999",
    )
    for spelling in refused:
        status, answer = await dora.call("GET", f"{path}?timeout={spelling}")
        assert (status, answer["error"]["field"]) == (400, "timeout"), (spelling, answer)
        message = answer["error"]["message"]
        assert "from 0.001 to 300 seconds" in message, message
        assert "e.g. 30 or 2.5" in message, message
    for field, spelling in (("queue_timeout", "1e-400"), ("keep_for", "0.1e-999")):
        body = f'{{"cpus": 0.5, "memory": "64M", "image": "x", "command": ["true"], "{field}": {spelling}}}'
        status, answer = await _post_as_written(dora, body)
        assert (status, answer["error"]["code"]) == (400, "MALFORMED_JSON"), answer
        assert "write 0, or a larger number" in answer["error"]["message"], answer
    assert await pool.store.head_position() == head


async def _post_as_written(user: Api, text: str) -> tuple[int, Any]:
    """POST /v1/allocations with `text` as its JSON body, byte for byte (json= would re-encode it)."""
    async with user.http.post(
        user.base + "/v1/allocations",
        data=text,
        headers={**user.headers, "Content-Type": "application/json"},
    ) as response:
        return response.status, await response.json()


async def _raw(port: int, head: bytes, source: str | None = None) -> bytes:
    """Send `head` as is (from the loopback address `source`, if given) and read the answer to
    its end (aiohttp closes after a refusal)."""
    local = (source, 0) if source is not None else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def test_requests_the_parser_refuses_are_logged_without_their_text_and_sparingly(
    shared: tuple[Pool, Api],
) -> None:
    """Tried: 30 requests aiohttp's parser refuses (bare LF line ends, a header past 8 KB), each
    with alice's bearer token, from one address.
    Must hold: each gets a 400; the allocator's log never holds the token, nor a traceback; it
    says `api.http_refused` with the kind of refusal, a few times, not 30; alice's token still
    works and nothing is recorded."""
    pool, alice = shared
    head = await pool.store.head_position()
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    log_path = pool.workdir / "allocator.log"
    before = log_path.stat().st_size
    bare_lf = f"GET /v1/pool HTTP/1.1\nHost: x\nAuthorization: Bearer {token}\n\n".encode()
    pad = "p" * 9000
    too_long = f"GET /v1/pool HTTP/1.1\r\nAuthorization: Bearer {token}\r\nX-Pad: {pad}\r\n\r\n".encode()
    for i in range(30):
        answer = await _raw(pool.api_port, bare_lf if i % 2 else too_long)
        assert answer.split(b" ", 2)[1] == b"400", answer[:200]
        # This allocator serves no name over https: no answer of it carries HSTS.
        assert b"strict-transport-security" not in answer.lower(), answer[:400]

    written = ""
    for _ in range(50):  # the log is written by another process
        written = log_path.read_bytes()[before:].decode(errors="replace")
        if "api.http_refused" in written:
            break
        await asyncio.sleep(0.1)
    assert token not in written, "a client's token reached the allocator's log"
    assert "Traceback" not in written, written[-2000:]
    assert "Error handling request" not in written, written[-2000:]
    refused = [line for line in written.splitlines() if "api.http_refused" in line]
    assert refused, written[-2000:]
    assert len(refused) <= 10, f"{len(refused)} lines for 30 refusals from one address"
    assert {json.loads(line)["refusal"] for line in refused} <= {
        "BadHttpMessage",
        "BadStatusLine",
        "LineTooLong",
    }
    assert {json.loads(line)["status"] for line in refused} == {400}

    status, _ = await alice.call("GET", "/v1/pool")
    assert status == 200
    assert await pool.store.head_position() == head


async def test_a_client_gone_mid_body_is_no_bug_and_no_outage(shared: tuple[Pool, Api]) -> None:
    """Tried: alice's POST of an allocation announcing a 4 KiB body, of which 20 bytes are sent
    before the client closes its connection, five times. Must hold: the allocator logs
    `api.client_gone` for them, with no traceback, no `api.unhandled` (a bug's incident) and no
    `api.log_unavailable` (before: aiohttp's ConnectionResetError was read as the event log's
    database away); nothing is recorded and alice is served after."""
    pool, alice = shared
    head = await pool.store.head_position()
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    log_path = pool.workdir / "allocator.log"
    before = log_path.stat().st_size
    request = (
        "POST /v1/allocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 4096\r\n\r\n"
    ).encode() + b'{"cpus": 1, "memory"'
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", pool.api_port)
        writer.write(request)
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body
        writer.close()
        await writer.wait_closed()

    written = ""
    for _ in range(100):  # the log is written by another process
        written = log_path.read_bytes()[before:].decode(errors="replace")
        if written.count("api.client_gone") >= 5:
            break
        await asyncio.sleep(0.1)
    assert written.count("api.client_gone") == 5, written[-2000:]
    assert "Traceback" not in written, written[-2000:]
    assert "api.unhandled" not in written, written[-2000:]
    assert "api.log_unavailable" not in written, written[-2000:]
    status, _ = await alice.call("GET", "/v1/pool")
    assert status == 200
    assert await pool.store.head_position() == head


def _good_in(charset: str) -> bytes:
    """A request the allocator would place, in `charset`."""
    return json.dumps(small()).encode(charset)


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        # A charset Python has no codec for: the client's mistake, not the allocator's.
        ("application/json; charset=bogus-xx", b'{"cpus": 1}', 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("text/plain", b'{"cpus": 1}', 415, "UNSUPPORTED_MEDIA_TYPE"),
        # A charset Python has a codec for but JSON is never in (RFC 8259: UTF-8 only): the
        # EBCDIC and UTF-7 spellings of a good request, which a proxy or an audit reads as
        # other bytes, were read and placed.
        (
            "application/json; charset=cp500",
            json.dumps(small()).encode("cp500"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "application/json; charset=utf-7",
            json.dumps(small()).encode("utf-7"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "application/json; charset=utf-16",
            json.dumps(small()).encode("utf-16"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        # UTF-8 by any of its names is read.
        ("application/json; charset=UTF8", json.dumps(small(cpus=64)).encode(), 422, "EXCEEDS_ANY_HOST"),
        # A name twice: Python would keep the last, where a proxy or an audit read the first.
        (
            "application/json",
            b'{"cpus": 300, "memory": "64M", "image": "x", "cpus": 0.5}',
            400,
            "MALFORMED_JSON",
        ),
    ],
)
async def test_bodies_of_an_unreadable_type_or_with_a_name_twice_are_refused(
    erin: tuple[Pool, Api], content_type: str, body: bytes, status: int, code: str
) -> None:
    """Tried: a body in a charset with no codec, a body of another media type, a JSON object
    naming a field twice. Must hold: the status and code the API publishes, a message, and the
    log's head does not move."""
    pool, user = erin
    head = await pool.store.head_position()
    async with user.http.post(
        pool.api + "/v1/allocations", data=body, headers={**user.headers, "Content-Type": content_type}
    ) as response:
        got_status, answer = response.status, await response.json()
    assert got_status == status, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert await pool.store.head_position() == head


async def test_connections_without_a_request_under_way_are_closed(
    impatient: tuple[Pool, Api],
) -> None:
    """Tried: one connection that sends nothing, and one that sends a request's head one header
    every 3 s and never ends it (slowloris), both with no token, to an allocator whose
    --idle-connection-timeout is IDLE_CONNECTION_S.
    Must hold: the allocator closes both (within IDLE_CONNECTION_S, generously), while alice's
    requests are answered meanwhile; nothing is recorded."""
    pool, alice = impatient
    port = int(alice.base.rsplit(":", 1)[1])
    head = await pool.store.head_position()
    silent = await asyncio.open_connection("127.0.0.1", port)
    trickle = await asyncio.open_connection("127.0.0.1", port)
    trickle[1].write(b"GET /v1/pool HTTP/1.1\r\nHost: x\r\n")

    async def closed(reader: asyncio.StreamReader) -> bytes:
        return await reader.read()  # b"" (or a 4xx) once the server closes its end

    async def trickling(writer: asyncio.StreamWriter) -> None:
        for i in range(100):
            await asyncio.sleep(3)
            writer.write(f"X-Slow-{i}: 1\r\n".encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    slow = asyncio.create_task(trickling(trickle[1]))
    try:
        async with asyncio.timeout(IDLE_CONNECTION_S + 60):
            ends = asyncio.gather(closed(silent[0]), closed(trickle[0]))
            while not ends.done():
                status, _ = await alice.call("GET", "/v1/pool")
                assert status == 200
                await asyncio.wait([ends], timeout=2)
            assert [b"HTTP/1.1 200" not in end for end in ends.result()] == [True, True]
    finally:
        slow.cancel()
        for _, writer in (silent, trickle):
            writer.close()
    assert await pool.store.head_position() == head


async def test_no_answer_of_the_api_may_be_cached_or_sniffed(shared: tuple[Pool, Api]) -> None:
    """Tried: a user's list, the pool, an unknown path, a request without a token.
    Must hold: every answer, good or refused, says
    `Cache-Control: no-store` and `X-Content-Type-Options: nosniff` (they hold a user's
    allocations and tokens)."""
    pool, alice = shared
    asked = [
        ("/v1/allocations", alice.headers),
        ("/v1/pool", alice.headers),
        ("/v1/no-such-thing", alice.headers),
        ("/v1/allocations", {}),
    ]
    for path, headers in asked:
        async with alice.http.get(pool.api + path, headers=headers) as response:
            assert response.headers.get("Cache-Control") == "no-store", (path, response.status)
            assert response.headers.get("X-Content-Type-Options") == "nosniff", (path, response.status)


async def test_one_address_cannot_take_every_connection(shared: tuple[Pool, Api]) -> None:
    """Tried: MAX_PER_ADDRESS connections from 127.0.0.1 held open without a request, then
    one more from there, and alice from another loopback address meanwhile.
    Must hold: the one past the cap is closed at once with nothing read or answered; alice's
    requests from 127.0.0.2 are answered while the flood holds its connections, and hers from
    127.0.0.1 again once it lets them go; nothing is recorded."""
    pool, alice = shared
    head = await pool.store.head_position()
    held = [await asyncio.open_connection("127.0.0.1", pool.api_port) for _ in range(MAX_PER_ADDRESS)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", pool.api_port)
        writer.write(b"GET /v1/pool HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                assert await reader.read() == b"", "past the cap: closed without an answer"
        writer.close()

        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=other) as http,
            http.get(pool.api + "/v1/pool", headers=alice.headers) as response,
        ):
            assert response.status == 200, "another address is served meanwhile"
    finally:
        for _, held_writer in held:
            held_writer.close()
    async with asyncio.timeout(10):
        while True:  # the server sees the closes in its own time
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await alice.call("GET", "/v1/pool")
                if status == 200:
                    break
            await asyncio.sleep(0.1)
    assert await pool.store.head_position() == head


async def test_a_token_of_bytes_that_are_not_utf8_is_refused_and_counted_as_a_guess(
    shared: tuple[Pool, Api],
) -> None:
    """Tried: 35 requests from 127.0.0.3 whose bearer token holds bytes that are not UTF-8 (aiohttp
    reads them as lone surrogates, which hashing the token raised on: a 500 and a traceback in
    the log each time, never counted against the address).
    Must hold: each is a 401 UNAUTHENTICATED until the address is locked out for guessing (429
    from the FailureWindow's 31st); the log holds no traceback; alice's good token still works
    from that address; nothing is recorded."""
    pool, alice = shared
    head = await pool.store.head_position()
    log_path = pool.workdir / "allocator.log"
    before = log_path.stat().st_size
    request = (
        b"GET /v1/pool HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer pl_\xff\xfe\r\n\r\n"
    )
    statuses = []
    for _ in range(35):
        answer = await _raw(pool.api_port, request, source="127.0.0.3")
        statuses.append(int(answer.split(b" ", 2)[1]))
        if statuses[-1] == 401:
            assert b"UNAUTHENTICATED" in answer, answer[:300]
    limit = FailureWindow().limit
    assert statuses == [401] * limit + [429] * (35 - limit), statuses

    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as http,
        http.get(pool.api + "/v1/pool", headers=alice.headers) as response,
    ):
        assert response.status == 200, "a good token works from the locked-out address"
    written = log_path.read_bytes()[before:].decode(errors="replace")
    assert "api.unhandled" not in written, written[-2000:]
    assert "Traceback" not in written, written[-2000:]
    assert await pool.store.head_position() == head


async def test_a_good_token_gets_registry_access_from_an_address_locked_out_for_guessing(
    shared: tuple[Pool, Api],
) -> None:
    """Tried: 127.0.0.4 guesses bearer tokens until it is locked out, then asks the registry's
    token endpoint (as `docker push` does) with alice's good token, and with a wrong one.
    Must hold: alice gets her token there as she gets answers from the API (one script looping
    on an old token once locked every `docker push` behind its address out); the wrong one is
    still refused with 429; nothing is recorded."""
    pool, alice = shared
    head = await pool.store.head_position()
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.4", 0))) as http:
        for i in range(FailureWindow().limit):
            async with http.get(pool.api + "/v1/pool", headers={"Authorization": f"Bearer pl_guess{i}"}) as r:
                assert r.status == 401
        async with http.get(pool.api + "/v1/pool", headers={"Authorization": "Bearer pl_guess"}) as r:
            assert r.status == 429, "locked out for guessing"
        async with http.get(pool.api + "/v1/pool", headers=alice.headers) as r:
            assert r.status == 200
        scope = {"scope": "repository:alice/sim:pull,push"}
        basic = {"Authorization": aiohttp.encode_basic_auth("alice", token)}
        async with http.get(pool.api + TOKEN_PATH, params=scope, headers=basic) as r:
            assert r.status == 200, await r.text()
            claims = jwt.decode((await r.json())["token"], options={"verify_signature": False})
            assert claims["sub"] == "alice"
        wrong = {"Authorization": aiohttp.encode_basic_auth("alice", "pl_wrong")}
        async with http.get(pool.api + TOKEN_PATH, params=scope, headers=wrong) as r:
            assert r.status == 429
            assert r.headers["Retry-After"].isdigit()
    assert await pool.store.head_position() == head


async def test_a_body_that_trickles_in_is_cut_off_and_its_connection_closed(
    impatient: tuple[Pool, Api],
) -> None:
    """Tried: a sign-in form with no token, and alice's allocation request, each posted with a
    body of 1000 bytes sent a byte every 2 s (the head arrives whole, so the idle timeout never
    applied: the sign-in's connection was held as long as the bytes kept coming), to an
    allocator whose --body-read-timeout is BODY_READ_S.
    Must hold: both get a 408 BODY_TOO_SLOW within BODY_READ_S (and some slack), and their
    connections are closed soon after; alice's requests are answered meanwhile; nothing is
    recorded."""
    pool, alice = impatient
    port = int(alice.base.rsplit(":", 1)[1])
    head = await pool.store.head_position()
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    host = f"127.0.0.1:{port}"
    heads = [
        f"POST /web/signin HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=",
        f"POST /v1/allocations HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    ]

    async def trickle(request_head: str) -> tuple[float, bytes]:
        """The seconds until the server closed the connection, and what it answered."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = asyncio.get_running_loop().time()
        writer.write(request_head.encode())

        async def drip() -> None:
            while True:
                await asyncio.sleep(2)
                writer.write(b" ")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        dripping = asyncio.create_task(drip())
        try:
            async with asyncio.timeout(BODY_READ_S + 60):
                answer = b""
                with contextlib.suppress(ConnectionError):
                    while chunk := await reader.read(65536):
                        answer += chunk
            return asyncio.get_running_loop().time() - started, answer
        finally:
            dripping.cancel()
            writer.close()

    both = asyncio.gather(*(trickle(h) for h in heads))
    while not both.done():
        status, _ = await alice.call("GET", "/v1/pool")
        assert status == 200
        await asyncio.wait([both], timeout=2)
    for took, answer in both.result():
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"BODY_TOO_SLOW" in answer
        assert took < BODY_READ_S + 20, f"closed after {took:.0f} s"
    assert await pool.store.head_position() == head


async def test_a_token_with_unicode_whitespace_around_it_is_refused(shared: tuple[Pool, Api]) -> None:
    """Tried: alice's good token with Unicode whitespace around it (a no-break space, an em
    space, U+3000, NEL; `str.strip()` took them all off and let the request in as alice), as a
    bearer token and posted to the pages' sign-in form; and with ASCII spaces and a tab around it.
    Must hold: each with Unicode whitespace is a 401 UNAUTHENTICATED (the form's too, starting
    no session); with ASCII whitespace (HTTP's own) the token works; nothing is recorded."""
    pool, alice = shared
    head = await pool.store.head_position()
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    source = "127.0.0.5"
    for sent in (f"{token}\u00a0", f"\u3000{token}", f"{token}\u2003", f"\u0085{token}\u0085"):
        request = (
            f"GET /v1/pool HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {sent}\r\n\r\n"
        ).encode()
        answer = await _raw(pool.api_port, request, source=source)
        assert answer.startswith(b"HTTP/1.1 401 "), (ascii(sent[-3:]), answer[:300])
        assert b"UNAUTHENTICATED" in answer
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as http,
            http.post(
                pool.api + "/web/signin",
                data={"token": sent},
                headers={"Origin": pool.api},
                allow_redirects=False,
            ) as response,
        ):
            assert response.status == 401, ascii(sent[-3:])
            assert "Set-Cookie" not in response.headers
    request = (
        f"GET /v1/pool HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer  {token} \t\r\n\r\n"
    ).encode()
    answer = await _raw(pool.api_port, request, source=source)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert await pool.store.head_position() == head


async def test_a_static_file_that_is_not_there_gets_the_pages_clear_404(shared: tuple[Pool, Api]) -> None:
    """Tried: the pages' static files: one that is there; a name that is not, the folder itself,
    a path below it, and ones climbing out of it (`..`, encoded slashes and backslashes) to the
    allocator's own source. Must hold: the file is served as its type; every other is a 404
    with the pages' JSON error saying no such page (an empty body typed
    application/octet-stream, or a bare 403 for the folder, said nothing); nothing recorded."""
    pool, _ = shared
    head = await pool.store.head_position()
    async with aiohttp.ClientSession() as http, http.get(pool.api + "/web/static/live.js") as response:
        assert response.status == 200
        assert response.content_type in ("text/javascript", "application/javascript")
        assert "EventSource" in await response.text()
    for path in (
        "/web/static/nothing.js",
        "/web/static/",
        "/web/static/.",
        "/web/static/css/potluck.css",
        "/web/static/..%2froutes.py",
        "/web/static/..%5croutes.py",
        "/web/static/%2e%2e/routes.py",
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        answer = await _raw(pool.api_port, request)
        head_part, _, body = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 404 "), (path, answer[:300])
        assert b"application/json" in head_part, (path, head_part)
        assert json.loads(body)["error"]["code"] == "NOT_FOUND", (path, body)
    assert await pool.store.head_position() == head


async def test_a_request_with_two_authorization_headers_is_refused(shared: tuple[Pool, Api]) -> None:
    """Tried: alice's good token and a wrong one as two Authorization headers of one request, in
    either order, to the API and to the registry's token endpoint (the allocator read the
    first, where a proxy in front may have checked or logged the last).
    Must hold: each is a 401 UNAUTHENTICATED saying to send one; alice's token alone still
    works; nothing is recorded."""
    pool, alice = shared
    head = await pool.store.head_position()
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    pairs = {
        "/v1/pool": (f"Bearer {token}", "Bearer pl_wrong"),
        TOKEN_PATH: (aiohttp.encode_basic_auth("alice", token), aiohttp.encode_basic_auth("x", "pl_wrong")),
    }
    for path, (good, wrong) in pairs.items():
        for first, second in ((good, wrong), (wrong, good)):
            headers = CIMultiDict([("Authorization", first), ("Authorization", second)])
            async with alice.http.get(pool.api + path, headers=headers) as response:
                answer = await response.json()
                assert response.status == 401, (path, answer)
                assert answer["error"]["code"] == "UNAUTHENTICATED"
                assert "one Authorization header" in answer["error"]["message"]
        async with alice.http.get(pool.api + path, headers={"Authorization": good}) as response:
            assert response.status == 200, path
    assert await pool.store.head_position() == head


@pytest.mark.parametrize(
    ("field", "written"),
    [
        ("tasks", "3.0000000000000000001"),
        ("tasks", "10000.0000000000000001"),
        ("tasks", "1.9999999999999999999"),
        ("retries", "2.00000000000000001"),
        ("parallelism", "1.00000000000000000001"),
    ],
)
async def test_a_number_a_float_would_round_to_a_whole_one_is_refused(
    erin: tuple[Pool, Api], field: str, written: str
) -> None:
    """Tried: POST /v1/jobs whose whole-number field is written as a number that is not whole
    but that a float rounds to one (3.0000000000000000001 tasks). Before: it was read as the
    whole number (a job of 3 tasks, 201), another number than the client wrote. Must hold: 400
    MALFORMED_JSON naming the field, whose message quotes the number and says what it would have
    been read as; the log's head does not move."""
    pool, user = erin
    head = await pool.store.head_position()
    spec = {"image": DEFAULT_TAG, "command": ["true"], "cpus": 0.25, "memory": "64M", "disk": "64M"}
    fields = {"tasks": "1", field: written}
    text = json.dumps(spec)[:-1] + "".join(f', "{name}": {value}' for name, value in fields.items()) + "}"
    async with user.http.post(
        pool.api + "/v1/jobs", data=text, headers={**user.headers, "Content-Type": "application/json"}
    ) as response:
        status, answer = response.status, await response.json()
    assert (status, answer["error"]["code"], answer["error"].get("field")) == (
        400,
        "MALFORMED_JSON",
        field,
    ), answer
    assert written in answer["error"]["message"], answer
    assert "cannot be read exactly" in answer["error"]["message"], answer
    assert await pool.store.head_position() == head


async def test_a_body_announced_too_large_is_refused_before_it_is_sent(erin: tuple[Pool, Api]) -> None:
    """Tried: `Expect: 100-continue` with a Content-Length past 256 KiB, to the API's POST
    /v1/allocations (with a good token) and to the sign-in form (from its own origin); then
    one that fits. Before: the allocator answered `100 Continue` to any length, inviting the
    body, read 256 KiB of it and only then refused it. Must hold: the first two are answered
    413 BODY_TOO_LARGE at once (no 100 Continue first) and `Connection: close`; the one that
    fits gets its 100 Continue, and once its body is sent, its answer (a 400 naming the field);
    nothing is recorded."""
    pool, user = erin
    head = await pool.store.head_position()
    host = f"127.0.0.1:{pool.api_port}"
    for path, extra_header in (
        ("/v1/allocations", f"Authorization: {user.headers['Authorization']}"),
        ("/web/signin", f"Origin: http://{host}"),
    ):
        head_text = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: 300000\r\nExpect: 100-continue\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", pool.api_port)
        try:
            writer.write(head_text.encode())
            async with asyncio.timeout(10):
                answer_head = await reader.readuntil(b"\r\n\r\n")
                assert answer_head.startswith(b"HTTP/1.1 413 "), (path, answer_head)  # not 100 Continue
                answer = answer_head + await answer_body(reader, answer_head)
        finally:
            writer.close()
        assert b"Connection: close" in answer_head, (path, answer_head)
        assert b'"BODY_TOO_LARGE"' in answer, (path, answer[-200:])
    reader, writer = await asyncio.open_connection("127.0.0.1", pool.api_port)
    try:
        body = b'{"cpus": 1}'
        writer.write(
            (
                f"POST /v1/allocations HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: {user.headers['Authorization']}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(10):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b'"field": "memory"' in answer, answer[-300:]
    assert await pool.store.head_position() == head


async def test_a_body_is_invited_only_from_a_caller_with_a_known_token(erin: tuple[Pool, Api]) -> None:
    """Tried: `Expect: 100-continue` to POST /v1/allocations, /v1/allocations/ID/extend and
    /v1/jobs with a body that fits, from callers with no Authorization, a Basic one, and a
    bearer token the pool never gave out. Before: each got `100 Continue` and was invited to
    send its body before anyone looked at who it was. Must hold: each is answered 401
    UNAUTHENTICATED at once, with no 100 Continue first, and nothing is recorded (the good
    token's 100 Continue: test_a_body_announced_too_large_is_refused_before_it_is_sent)."""
    pool, _ = erin
    head = await pool.store.head_position()
    host = f"127.0.0.1:{pool.api_port}"
    for path in ("/v1/allocations", "/v1/allocations/a-000000000001/extend", "/v1/jobs"):
        for authorization in (
            "",
            "Authorization: Basic ZXJpbjpwYXNz\r\n",
            "Authorization: Bearer pl_never_given\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", pool.api_port)
            try:
                writer.write(
                    (
                        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}"
                        "Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
                    ).encode()
                )
                async with asyncio.timeout(10):
                    answer_head = await reader.readuntil(b"\r\n\r\n")
                    assert answer_head.startswith(b"HTTP/1.1 401 "), (path, authorization, answer_head)
                    answer = await answer_body(reader, answer_head)
            finally:
                writer.close()
            assert b'"UNAUTHENTICATED"' in answer, (path, authorization, answer)
    assert await pool.store.head_position() == head


async def test_a_request_the_parser_refuses_is_not_quoted_back(shared: tuple[Pool, Api]) -> None:
    """Tried: requests aiohttp's parser refuses on the line that holds a secret: an
    `Authorization: Bearer` line with a control character after the token, a session `Cookie`
    line likewise, and a request whose declared body swallows the start of the next one so that
    the parser meets the next request's Authorization line as a method. Before: the 400's body
    quoted the refused line (`Invalid header value char: b'Authorization: Bearer pl_...'`), so
    the token or the HttpOnly cookie came back to whoever could read the answer. Must hold:
    each gets a 400 whose body names the kind of refusal and holds neither the token nor the
    cookie; alice's token still works."""
    pool, alice = shared
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    cookie = "potluck_session=sEcReTsEsSiOnIdThAtIsHtTpOnLy"
    host = f"127.0.0.1:{pool.api_port}"
    heads = [
        f"GET /v1/pool HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\x01\r\n\r\n",
        f"GET / HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\x01\r\n\r\n",
        f"POST /v1/allocations HTTP/1.1\r\nHost: {host}\r\nContent-Length: 22\r\n\r\n"
        f"GET /v1/pool HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n",
    ]
    for head in heads:
        answer = await _raw(pool.api_port, head.encode())
        # The parser's 400 (after the 401 of the request before it, when that one is answered first).
        assert b" 400 Bad Request\r\n" in answer, answer[:200]
        assert token.encode() not in answer, answer[-300:]
        assert b"sEcReTsEsSiOn" not in answer, answer[-300:]
        assert b"this is not an HTTP/1.1 request the allocator reads" in answer, answer[-300:]
    status, _ = await alice.call("GET", "/v1/pool")
    assert status == 200
