"""The operator's commands, as the real `potluck ops ...` processes, on a real pool.

Users allocate over HTTP on two hosts with their own Docker engines; the
operator then replays the log and checks it against the running registry
and allocator, looks at the pool as it was at an earlier moment (compared
with the allocator's own answer taken at that moment), follows the log,
shows a stream, reads the status screen. Every command refuses bad input with
one clear line and a non-zero exit.
"""

import asyncio
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import HostEnrolled, host_stream
from potluck.contracts.messages import ControlHost
from potluck.contracts.subjects import CONTROL
from potluck.events import Event, EventRegistry, EventStore
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.ops.live import LiveModel, fetch_allocator
from tests.e2e.conftest import POTLUCK_OPS, ops, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool
from tests.fixtures.servers import _fresh_database
from tests.helpers import append_raw_row, host_registered


class User:
    def __init__(self, http: aiohttp.ClientSession, pool: Pool, token: str) -> None:
        self.http = http
        self.pool = pool
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.pool.api + path, json=body, headers=self.headers) as r:
            answer = await r.json()
            assert r.status < 300, answer
            return answer

    async def allocate(self, cpus: float) -> str:
        body = {
            "cpus": cpus,
            "memory": "64M",
            "disk": "64M",
            "image": DEFAULT_TAG,
            "command": ["sleep", "3600"],
        }
        created = await self.call("POST", "/v1/allocations", body)
        return str(created["id"])


async def second_laptop(pool: Pool, engine: DockerEngine) -> EnrolledHost:
    host = await pool.enroll("laptop-b")
    pool.write_config(host, engine)
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    return host


async def allocator_now(pool: Pool, timeout: float = 30) -> LiveModel:
    """The allocator's models once it has folded the log as it stands now. A test that waited
    for an event in the store must not read a model that has not folded that event yet."""
    head = await pool.store.head_position()
    deadline = asyncio.get_running_loop().time() + timeout
    nc = await pool.client()
    try:
        while (live := await fetch_allocator(nc)).position < head:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the allocator is at {live.position}, not {head}\n{pool.logs()}")
            await asyncio.sleep(0.1)
        return live
    finally:
        await nc.close()


async def test_replay_check_and_the_pool_at_an_earlier_moment(
    pool: Pool,
    laptop: EnrolledHost,
    docker_engines: list[DockerEngine],
    database_url: str,
    postgres_url: str,
) -> None:
    """`replay --check` of the pool's own log agrees with both services, and `replay --until`
    shows the pool as the allocator had it. Tried too: `--check` of another log (a restored
    copy, say) against these services, as an operator whose POTLUCK_HOME named another pool
    did: it was told of eight differences, all between two logs. Must hold: it exits 1
    saying the services follow another event log, and compares nothing."""
    other = await second_laptop(pool, docker_engines[1])
    await pool.wait_api()
    async with aiohttp.ClientSession() as http:
        alice = User(http, pool, await pool.add_user("alice"))
        bob = User(http, pool, await pool.add_user("bob"))
        first = await alice.allocate(1.5)
        second = await bob.allocate(1.0)  # does not fit next to `first`: the other laptop
        third = await bob.allocate(0.5)
        for alloc_id in (first, second, third):
            await wait_for_status(pool, alloc_id, "running")

        then = await allocator_now(pool)
        assert {a: row["status"] for a, row in then.models["allocations"].items()} == {
            first: "running",
            second: "running",
            third: "running",
        }

        await alice.call("DELETE", f"/v1/allocations/{first}")
        await wait_for_status(pool, first, "released")
        code, out, err = await ops("hosts", "control", other.host_id, "pause", "--database-url", database_url)
        assert code == 0, err
        fourth = await alice.allocate(0.5)
        await wait_for_status(pool, fourth, "running")

    # Both live models are compared, each at the position it reports.
    code, out, err = await ops(
        "replay",
        "--check",
        "--database-url",
        database_url,
        "--nats-url",
        pool.nats.url,
        "--nats-seed-file",
        str(pool.services_seed_file),
    )
    assert code == 0, out + err + pool.logs()
    assert "registry at position" in out
    assert "allocator at position" in out
    assert out.count("no difference") == 2
    code, out, err = await ops(
        "replay",
        "--check",
        "--json",
        "--database-url",
        database_url,
        "--nats-url",
        pool.nats.url,
        "--nats-seed-file",
        str(pool.services_seed_file),
    )
    assert code == 0, err
    checked = json.loads(out)
    assert checked["ok"] is True
    allocator_side = next(c for c in checked["comparisons"] if c["service"] == "allocator")
    assert allocator_side["compared"]["allocations"] == 4
    assert allocator_side["compared"]["hosts"] == 2

    # The pool as it was when the allocator answered above.
    code, out, err = await ops(
        "replay", "--until", str(then.position), "--json", "--database-url", database_url
    )
    assert code == 0, err
    view = json.loads(out)
    assert view["position"] == then.position
    assert {a["alloc_id"]: a["status"] for a in view["allocations"]} == {
        a: row["status"] for a, row in then.models["allocations"].items()
    }
    assert {h["host_id"]: h["reserved"] for h in view["hosts"]} == {
        h: row["reserved"] for h, row in then.models["capacity"].items()
    }
    assert {h["host_id"]: h["status"] for h in view["hosts"]} == {
        h: row["status"] for h, row in then.models["hosts"].items()
    }
    assert view["allocations_by_state"] == {"running": 3}

    code, out, _ = await ops("replay", "--until", str(then.position), "--database-url", database_url, "-q")
    assert code == 0
    assert f"log position {then.position}" in out
    for alloc_id in (first, second, third):
        assert alloc_id in out
    assert fourth not in out

    # Another log, longer than this pool's, so that every position the services report is in it.
    other_url = await _fresh_database(postgres_url, f"other_log_{os.getpid()}")
    another = await EventStore.open(other_url)
    try:
        for i in range(await pool.store.head_position() + 10):
            await another.append(
                host_stream(f"h-{i}"), [HostEnrolled(host_id=f"h-{i}", name=f"m{i}", nkey="UKEY")]
            )
    finally:
        await another.close()
    code, out, err = await ops(
        "replay",
        "--check",
        "--database-url",
        other_url,
        "--nats-url",
        pool.nats.url,
        "--nats-seed-file",
        str(pool.services_seed_file),
    )
    assert code == 1, out + err
    assert "follows another event log than this one" in err, err
    assert "difference" not in out, out


async def test_status_events_and_trace_on_a_running_pool(
    pool: Pool, laptop: EnrolledHost, database_url: str
) -> None:
    await pool.wait_api()
    async with aiohttp.ClientSession() as http:
        alice = User(http, pool, await pool.add_user("alice"))
        alloc_id = await alice.allocate(0.5)
        await wait_for_status(pool, alloc_id, "running")

        # Follows from the head as it is now, whenever the process gets going.
        head = await pool.store.head_position()
        tail = await asyncio.create_subprocess_exec(
            *POTLUCK_OPS,
            "events",
            "tail",
            "--type",
            "AllocationReleased",
            "--type",
            "CapacityFreed",
            "--count",
            "2",
            "--after",
            str(head),
            "--json",
            "--database-url",
            database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.5)  # following live, whether it starts before or after the release
        await alice.call("DELETE", f"/v1/allocations/{alloc_id}")
        async with asyncio.timeout(60):
            tail_out, tail_err = await tail.communicate()
    assert tail.returncode == 0, tail_err.decode()
    followed = [json.loads(line) for line in tail_out.decode().splitlines()]
    assert sorted(e["type"] for e in followed) == ["AllocationReleased", "CapacityFreed"]
    assert {e["data"]["alloc_id"] for e in followed} == {alloc_id}

    code, out, err = await ops(
        "events", "show", f"alloc-{alloc_id}", "--json", "--database-url", database_url
    )
    assert code == 0, err
    history = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in history] == [
        "AllocationRequested",
        "AllocationPlaced",
        "AllocationRunning",
        "AllocationReleased",
    ]
    assert [e["version"] for e in history] == [1, 2, 3, 4]
    code, out, _ = await ops("events", "show", f"alloc-{alloc_id}", "--database-url", database_url)
    assert code == 0
    assert "AllocationPlaced" in out
    assert "actor" in out

    code, out, _ = await ops("events", "tail", "--after", "0", "--count", "3", "--database-url", database_url)
    assert code == 0
    assert len(out.splitlines()) == 3
    assert "HostEnrolled" in out.splitlines()[0]

    # The relay (embedded in the services) catches up: lag 0.
    for _ in range(100):
        code, out, err = await ops("status", "--json", "--database-url", database_url)
        assert code == 0, err
        status = json.loads(out)
        if status["relay"]["lag"] == 0:
            break
        await asyncio.sleep(0.2)
    assert status["relay"]["lag"] == 0
    assert status["relay"]["checkpoint"] == status["relay"]["head"] == status["position"]
    assert [h["host_id"] for h in status["hosts"]] == [laptop.host_id]
    assert status["allocations_by_state"] == {"released": 1}
    assert status["capacity"]["donated"]["cpus"] == 2.0
    assert status["capacity"]["reserved"]["cpus"] == 0.0
    code, out, _ = await ops("status", "--database-url", database_url)
    assert code == 0
    assert "Relay 'main': 0 events behind the log" in out
    assert laptop.host_id in out

    # This pool runs without tracing: the allocation has no trace to show, and says why.
    code, out, err = await ops("trace", alloc_id, "--database-url", database_url)
    assert code == 1
    assert "without trace context" in err


async def test_status_capacity_leaves_out_hosts_that_left_or_were_revoked(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine], database_url: str
) -> None:
    """Tried: two active hosts; the operator makes one leave (`ops hosts control HOST leave`),
    then revokes the other (`ops hosts revoke`), reading `ops status` after each. Must hold: the
    pool's capacity counts only the hosts still in it: the remaining one's donation, then
    nothing (a left or revoked host's donation was still counted: "cpus 2.5 free of 2.5" on a
    pool with 1 CPU in it), while the hosts table still lists both with their state, neither
    with anything free."""
    other = await second_laptop(pool, docker_engines[1])
    nats = [
        *("--nats-auth-file", str(pool.nats.auth_file), "--nats-pid-file", str(pool.nats.pid_file)),
        *("--service-seed-file", str(pool.services_seed_file), "--database-url", database_url),
    ]

    async def status() -> dict[str, Any]:
        code, out, err = await ops("status", "--json", "--database-url", database_url)
        assert code == 0, err
        return dict(json.loads(out))

    before = await status()
    donated = {h["host_id"]: h["donated"]["cpus"] for h in before["hosts"]}
    assert before["capacity"]["donated"]["cpus"] == donated[laptop.host_id] + donated[other.host_id]

    code, _, err = await ops("hosts", "control", other.host_id, "leave", *nats)
    assert code == 0, err
    await pool.wait_for_host(other.host_id, "left")
    after_leave = await status()
    assert {h["host_id"]: h["status"] for h in after_leave["hosts"]}[other.host_id] == "left"
    assert after_leave["capacity"]["donated"]["cpus"] == donated[laptop.host_id], after_leave["capacity"]
    assert after_leave["capacity"]["free"]["cpus"] == donated[laptop.host_id], after_leave["capacity"]

    code, _, err = await ops("hosts", "revoke", laptop.host_id, "--reason", "stolen", *nats)
    assert code == 0, err
    await pool.wait_for_host(laptop.host_id, "revoked")
    after_revoke = await status()
    assert {h["host_id"]: h["status"] for h in after_revoke["hosts"]} == {
        laptop.host_id: "revoked",
        other.host_id: "left",
    }
    assert after_revoke["capacity"]["donated"]["cpus"] == 0, after_revoke["capacity"]
    # Nor does either row show its donation as free (a revoked host read "1 / 0 / 1").
    assert [h["free"] for h in after_revoke["hosts"]] == [None, None], after_revoke["hosts"]
    code, out, err = await ops("status", "--database-url", database_url)
    assert code == 0, err
    assert "Capacity (registered hosts): cpus 0 free of 0," in out, out


#: Event types of a newer writer: registered here only, so no reader of this version knows them.
newer_writer = EventRegistry()


@newer_writer.register
class HostTeleported(Event):
    routing_field = "host_id"
    host_id: str
    to: str


async def test_status_shows_unreadable_events_and_what_each_service_skipped(
    pool: Pool, laptop: EnrolledHost, database_url: str
) -> None:
    """An event this version cannot decode is skipped by every reader, which goes on; `ops status`
    names it (position, stream, type) and, with --live, says what the running services skipped."""
    db = ("--database-url", database_url)
    live = ("--live", "--nats-url", pool.nats.url, "--nats-seed-file", str(pool.services_seed_file))
    code, out, err = await ops("status", "--json", *db)
    assert code == 0, err
    assert json.loads(out)["unreadable"] == {"count": 0, "events": [], "services": None}
    code, out, err = await ops("status", *db)
    assert code == 0, err
    assert "Unreadable events: none in the log" in out
    assert "Skipped by the running services" not in out

    # A service that does not answer is said not to, and the rest is still shown.
    pool.processes["allocator"].stop(timeout=10)
    [teleported] = await pool.store.append(
        host_stream(laptop.host_id), [HostTeleported(host_id=laptop.host_id, to="mars")]
    )
    where = teleported.position

    # The registry skipped it and keeps serving: the list, and commands decided on the stream
    # that holds it (the member's pause through the registry, the operator's resume from here).
    for _ in range(100):
        listed = await pool.live_hosts()
        if listed["position"] >= where:
            break
        await asyncio.sleep(0.1)
    assert listed["position"] >= where
    assert listed["skipped"]["count"] == 1
    [skipped] = listed["skipped"]["recent"]
    assert (skipped["position"], skipped["stream"], skipped["type"]) == (
        where,
        f"host-{laptop.host_id}",
        "HostTeleported",
    )
    nc = await pool.client(laptop)
    try:
        paused = await nc.request(
            f"{CONTROL}.{laptop.host_id}", ControlHost(action="pause").model_dump_json().encode(), timeout=10
        )
        assert json.loads(paused.data) == {
            "ok": True,
            "error": None,
            "data": {"host_id": laptop.host_id, "recorded": ["HostPaused"]},
        }
    finally:
        await nc.close()
    await pool.wait_for_host(laptop.host_id, "paused")
    code, out, err = await ops("hosts", "control", laptop.host_id, "resume", "--json", *db)
    assert code == 0, err
    assert json.loads(out)["recorded"] == ["HostResumed"]
    await pool.wait_for_host(laptop.host_id, "active")

    code, out, err = await ops("status", "--json", *db)
    assert code == 0, err
    status = json.loads(out)
    assert [h["status"] for h in status["hosts"]] == ["active"]
    unreadable = status["unreadable"]
    assert unreadable["count"] == 1
    [event] = unreadable["events"]
    assert (event["position"], event["stream"], event["type"]) == (
        where,
        f"host-{laptop.host_id}",
        "HostTeleported",
    )
    assert "HostTeleported" in event["error"]
    assert unreadable["services"] is None
    # Listed once, in the answer: not again as an error line of the command's own replay.
    assert "events.skipped_unreadable" not in err, err

    code, out, err = await ops("status", "--json", *live, "--timeout", "2", *db)
    assert code == 0, err
    services = json.loads(out)["unreadable"]["services"]
    assert services["registry"]["skipped"] == 1
    assert [e["position"] for e in services["registry"]["recent"]] == [where]
    assert services["registry"]["position"] >= where
    assert "no allocator answered" in services["allocator"]["error"]

    code, out, err = await ops("status", *live, "--timeout", "2", *db)
    assert code == 0, err
    assert "Unreadable events: 1 in the log that this version cannot decode" in out
    assert f"host-{laptop.host_id}" in out
    assert "HostTeleported" in out
    assert f"registry 1 (at {where})" in out
    assert "allocator not asked: no allocator answered" in out
    print(out)  # shown with -s: what an operator reads

    # NATS away: status still shows the log, and says why the services were not asked.
    code, out, err = await ops("status", "--json", "--live", "--nats-url", "nats://127.0.0.1:9", *db)
    assert code == 0, err
    services = json.loads(out)["unreadable"]["services"]
    assert all("cannot reach NATS" in services[name]["error"] for name in ("registry", "allocator"))


async def test_bad_input_to_every_command_gets_one_clear_line_and_a_failure(
    store: EventStore, database_url: str
) -> None:
    engine = EngineFacts(
        version="27", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
    )
    await store.append(
        host_stream("h-1"),
        [
            HostEnrolled(host_id="h-1", name="laptop", nkey="UKEY"),
            host_registered(
                host_id="h-1",
                donated=Capacity(cpus=2, memory_bytes=1 << 30, disk_bytes=1 << 30),
                engine=engine,
                hostd_version="test",
            ),
        ],
    )
    head = await store.head_position()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    db = ("--database-url", database_url)
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("events", "show", "alloc-a-nope", *db), 1, "no stream 'alloc-a-nope' in the log"),
        (("events", "show", "host-h", *db), 1, "similar streams: host-h-1"),
        (("events", "show", "nodash", *db), 1, "is not a stream name"),
        (("events", "tail", "--type", "HostExploded", *db), 1, "unknown event type 'HostExploded'"),
        (("events", "tail", "--stream", "alloc-a-nope", *db), 1, "no stream 'alloc-a-nope'"),
        (("events", "tail", "--after", str(head + 5), *db), 1, "past the end of the log"),
        (("events", "tail", "--after", "-1", *db), 1, "negative"),
        (("replay", "--until", str(head + 1), *db), 1, f"position {head + 1} is past the end of the log"),
        (("replay", "--until", "next tuesday", *db), 1, "is neither a log position"),
        (("replay", "--until", "2025-02-30T10:00:00", *db), 1, "is neither a log position"),
        (("replay", "--until", future, *db), 1, "is in the future"),
        (("replay", "--check", "--until", "1", *db), 2, "drop --until"),
        (
            ("replay", "--check", "--nats-url", "nats://127.0.0.1:9", "--timeout", "1", *db),
            2,
            "cannot reach NATS",
        ),
        (("trace", "a-doesnotexist", *db), 1, "no allocation 'a-doesnotexist' in the log"),
        # A job's id, as `potluck run` prints it: named as such, with where its tasks' ids are.
        (("trace", "j-1b2c3d4e5f6a", *db), 1, "`potluck job show j-1b2c3d4e5f6a` lists them"),
        (("trace", "a-x", "--viewer-url", "http://viewer/", *db), 2, "{trace_id}"),
        (
            ("status", "--database-url", "postgresql://u:s3cret@127.0.0.1:9/x"),
            1,
            "cannot reach the event log",
        ),
        (("status",), 2, "give --database-url (or POTLUCK_DATABASE_URL)"),
    ]
    # A few at once: each is a whole `python -m potluck` start, one after another over 40 s.
    room = asyncio.Semaphore(4)

    async def run(args: tuple[str, ...]) -> tuple[int, str, str]:
        async with room:
            return await ops(*args)

    results = await asyncio.gather(*(run(args) for args, _, _ in cases))
    for (args, code, message), (got, out, err) in zip(cases, results, strict=True):
        assert (got, message in err) == (code, True), (args, got, out, err)
        assert "Traceback" not in err, (args, err)
        assert "s3cret" not in err
    # A database without an event log yet.
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    got, _, err = await ops("status", "--database-url", admin_url)
    assert got == 1
    assert "has no event log yet" in err


async def test_events_tail_and_show_print_a_row_whose_data_is_not_an_object(
    store: EventStore, database_url: str
) -> None:
    """Tried: `ops events show` and `ops events tail` (tables, and --json) on a stream whose rows'
    data are a JSON string and a JSON array (a hand-made INSERT, another writer's rows): what an
    operator looks at first when `ops status` lists an unreadable event.
    Must hold: each exits 0 and prints both rows, saying their data is not a JSON object (before,
    the tables ended in an AttributeError traceback, the row never shown)."""
    await append_raw_row(store, "host-h-odd", "HostRegistered", '"just a string"', "{}")
    await append_raw_row(store, "host-h-odd", "HostRegistered", "[1, 2, 3]", "{}")
    db = ("--database-url", database_url)
    for args in (
        ("events", "show", "host-h-odd", *db),
        ("events", "tail", "--after", "0", "--count", "2", *db),
    ):
        code, out, err = await ops(*args)
        assert code == 0, (args, err)
        assert "Traceback" not in err, err
        assert out.count("(data is not a JSON object)") == 2, (args, out)
        assert "just a string" in out
    code, out, err = await ops("events", "tail", "--after", "0", "--count", "2", "--json", *db)
    assert code == 0, err
    assert [json.loads(line)["data"] for line in out.splitlines()] == ["just a string", [1, 2, 3]]


async def test_a_database_that_accepts_and_never_answers_is_named_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: `ops status` and `ops replay` against a Postgres port that accepts connections and
    never answers (a stopped or wedged server: a listener here that reads nothing back), their
    wait for it (POTLUCK_OPERATOR_CONNECT_TIMEOUT_S, 10 s by default) set to 2 s.
    Must hold: each exits 1 within the `ops` helper's 60 s, saying the log gave no answer within
    that wait (before, each waited asyncpg's 60 s and then said only "cannot reach the event log
    at URL ()")."""
    monkeypatch.setenv("POTLUCK_OPERATOR_CONNECT_TIMEOUT_S", "2")
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql://potluck:hunter2@127.0.0.1:{port}/potluck"
    try:
        results = await asyncio.gather(
            ops("status", "--database-url", url), ops("replay", "-q", "--database-url", url)
        )
    finally:
        server.close()
        for writer in held:
            writer.close()
    for code, _out, err in results:
        assert code == 1, err
        assert "error: cannot reach the event log at postgresql://potluck:***@" in err, err
        assert "(no answer within 2 s)" in err, err
        assert "hunter2" not in err
        assert "Traceback" not in err, err


# --- the compose deployment ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
#: Service keys of the Compose Specification (compose-spec/compose-spec, schema/compose-spec.json)
#: that this file may use; anything else is a typo compose would refuse.
SERVICE_KEYS = {
    "build", "command", "depends_on", "entrypoint", "environment", "healthcheck", "image", "pid",
    "ports", "profiles", "restart", "secrets", "user", "volumes",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def test_the_compose_file_is_consistent_and_complete() -> None:
    """What a compose tool does not check: the file against the rest of the repository (commands,
    mounts, the collector's pipelines), and rules of ours (healthchecks, profiles, no secret).
    The tool's own validation is the next test."""
    compose = _compose()
    services: dict[str, dict[str, Any]] = compose["services"]
    # No top-level `name:` (docker-compose 1.29 refuses it): .env names the project for both tools.
    assert set(compose) <= {"services", "volumes", "secrets", "x-potluck"}
    assert "COMPOSE_PROJECT_NAME=potluck" in (REPO / "ops" / "compose.env.example").read_text().splitlines()
    assert {
        "nats", "postgres", "registry", "allocator", "sshgateway", "otel-collector", "jaeger", "hostd",
        "image-registry",
    } <= set(services)  # fmt: skip
    volumes = set(compose["volumes"])
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert how["condition"] in CONDITIONS, (name, how)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            if how["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, source)
            elif not source.startswith("/"):
                assert source in volumes, (name, source)
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], (name, secret)
        check = service.get("healthcheck")
        if check is not None:
            assert set(check) <= HEALTHCHECK_KEYS, name
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            if check["test"][:3] == ["CMD", "python", "-c"]:
                compile(check["test"][3], f"{name} healthcheck", "exec")
        elif service.get("restart") != "no":
            # Long-running services report their health, but the collector (distroless: no
            # shell or client inside; its health_check extension answers on :13133).
            assert name == "otel-collector", f"{name} has no healthcheck"

    # Only the trial runs a hostd, and it holds no database credentials.
    assert {n for n, s in services.items() if s.get("profiles") == ["trial"]} == {"hostd", "trial-setup"}
    # The cluster profile adds only NATS nodes, each reading the cluster's config.
    cluster = {n for n, s in services.items() if s.get("profiles") == ["cluster"]}
    assert cluster == {"nats-1", "nats-2", "nats-3"}
    assert all(services[n]["command"] == ["--config", "/etc/nats/cluster.conf"] for n in cluster)
    assert all(s.get("profiles") in (None, ["trial"], ["cluster"]) for s in services.values())
    assert all(services[n]["profiles"] == ["trial"] for n in ("hostd", "trial-setup"))
    assert "POTLUCK_DATABASE_URL" not in services["hostd"]["environment"]
    assert services["hostd"]["secrets"] == []

    # No secret in the file: the password comes from .env, whose example is committed instead.
    text = (REPO / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    assert (REPO / "ops" / "compose.env.example").exists()
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./ops/secrets/")
    # The registry trusts the allocator's tokens: same service and issuer on both sides.
    from potluck.contracts.registry import ISSUER, SERVICE, TOKEN_PATH

    registry_env = services["image-registry"]["environment"]
    assert registry_env["REGISTRY_AUTH_TOKEN_SERVICE"] == SERVICE
    assert registry_env["REGISTRY_AUTH_TOKEN_ISSUER"] == ISSUER
    assert registry_env["REGISTRY_AUTH_TOKEN_REALM"].endswith(TOKEN_PATH)
    assert "POTLUCK_REGISTRY_TOKEN_KEY" in services["allocator"]["environment"]

    # Every process exports OTLP/HTTP to the collector, which receives it and sends traces to Jaeger.
    env = compose["x-potluck"]["environment"]
    assert "http://otel-collector:4318" in env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert "{trace_id}" in env["POTLUCK_TRACE_VIEWER_URL"]
    collector = yaml.safe_load((REPO / "ops" / "otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    for pipeline in collector["service"]["pipelines"].values():
        for part in ("receivers", "processors", "exporters"):
            assert set(pipeline[part]) <= set(collector[part]), (part, pipeline)
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert set(collector["service"]["pipelines"]) == {"traces", "metrics"}

    # The services run commands this `potluck` has, with options it knows.
    from click.testing import CliRunner

    from potluck.cli import main

    for name in ("registry", "allocator", "sshgateway", "hostd"):
        command = services[name]["command"]
        assert command[:2] == ["potluck", name], name
        assert name in main.commands, f"`potluck {name}` does not exist"
    hostd_help = CliRunner().invoke(main, ["hostd", "--help"]).output
    assert "--config" in hostd_help
    enroll_help = CliRunner().invoke(main, ["ops", "hosts", "enroll", "--help"]).output
    for option in ("--credentials-out", "--nats-auth-file", "--nats-pid-file"):
        assert option in enroll_help
    compile(services["nats-auth"]["command"][2], "nats-auth", "exec")
    setup = services["trial-setup"]["command"][0]
    compile(setup.split("<<'PY'\n", 1)[1].rsplit("PY\n", 1)[0], "trial-setup", "exec")


def _docker_compose(*args: str, env_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml --env-file ENV ARGS...` in the repository, no engine."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail(
            "docker-compose is missing: run ops/setup (Debian: apt-get install docker-compose)", pytrace=False
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "POSTGRES_", "OTEL_"))}
    # No engine answers there: `config` must not need one (a deployment is checked before it runs).
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    return subprocess.run(
        [tool, "-f", "docker-compose.yml", "--env-file", str(env_file), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("profiles", [(), ("trial",), ("cluster",)], ids=["central", "trial", "cluster"])
def test_the_real_compose_tool_validates_the_compose_file(profiles: tuple[str, ...], tmp_path: Path) -> None:
    """Debian's docker-compose (1.29, installed by ops/setup) parses the file against its schema,
    resolves the anchors and profiles, and interpolates the example env file, with no engine."""
    profile_args = [arg for profile in profiles for arg in ("--profile", profile)]
    example = REPO / "ops" / "compose.env.example"
    checked = _docker_compose(*profile_args, "config", "-q", env_file=example, tmp_path=tmp_path)
    assert checked.returncode == 0, checked.stderr
    # Every variable the file uses is set or has a default: compose warns about any other.
    assert "is not set" not in checked.stderr, checked.stderr

    rendered = _docker_compose(*profile_args, "config", env_file=example, tmp_path=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    config = yaml.safe_load(rendered.stdout)
    database_url = config["services"]["allocator"]["environment"]["POTLUCK_DATABASE_URL"]
    assert database_url == "postgresql://potluck:change-me@postgres:5432/potluck"

    # The tool does refuse what is wrong: without a password the file does not render at all.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = _docker_compose(*profile_args, "config", "-q", env_file=empty, tmp_path=tmp_path)
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in refused.stderr


def test_the_dockerfile_is_a_debian_image_of_this_repository() -> None:
    """Not built here: its base image, python:3.11-slim-bookworm, comes from Docker Hub, and no
    container registry can be reached from this machine, only package registries (Debian,
    PyPI), so `docker build` would fail at its FROM line. The file's instructions, base and
    references are checked instead; `docker compose build` builds it wherever Docker Hub
    answers."""
    instructions = {
        "FROM",
        "ENV",
        "RUN",
        "WORKDIR",
        "COPY",
        "USER",
        "ENTRYPOINT",
        "CMD",
        "ARG",
        "EXPOSE",
        "LABEL",
    }
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    words = [line.split()[0] for line in lines]
    assert set(words) <= instructions, set(words) - instructions
    assert words[0] == "FROM"
    assert "bookworm" in lines[0] or "debian" in lines[0]
    for line in lines:
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
        if line.startswith(("CMD", "ENTRYPOINT")):
            json.loads(line.split(None, 1)[1])
    assert 'potluck = "potluck.cli:main"' in (REPO / "pyproject.toml").read_text()
