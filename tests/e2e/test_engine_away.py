"""A laptop's Docker engine stops while its hostd runs on, or is not running when hostd starts:
the pool places nothing there, says why to the member, the operator and the users, and takes the
laptop back when the engine returns.

A real pool (NATS, Postgres, registry, allocator), laptop-a's hostd on the first private
engine and laptop-b's on an engine of its own, which the test stops (as `systemctl stop
docker` would) and starts again. Users ask through the real HTTP API and read `potluck alloc
ls/show`; the member reads `potluck host status`, the operator `potluck ops hosts list` and
`potluck ops status`; `potluck ops replay --check` must agree with the running services.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from potluck.contracts.host_events import host_stream
from potluck.contracts.reports import EngineStatus
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, build_test_image
from tests.e2e.conftest import allocator_at, member, ops, replay_agrees, start_laptop
from tests.e2e.test_allocation_conditions import User
from tests.fixtures.pool import EnrolledHost, Pool

pytestmark = pytest.mark.liveness(0.5, 6, 600.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def engine_away(pool: Pool, host_id: str) -> bool:
    return (await pool.hosts()).hosts[host_id].engine_away


async def until(check: Callable[[], Awaitable[bool]], what: str, pool: Pool, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not {what} after {timeout}s\n{pool.logs()}")
        await asyncio.sleep(0.2)


async def allocator_knows_engine_away(pool: Pool, host_id: str) -> None:
    """Until the allocator has folded the host's HostEngineLost: the log has it before the
    allocator does, and a request in between would be placed by the allocator's older view."""
    records = await pool.store.read_stream(host_stream(host_id))
    lost = [r for r in records if r.type == "HostEngineLost"]
    assert lost, [r.type for r in records]
    await allocator_at(pool, lost[-1].position)


async def waits_for_laptop_b(alice: User, image: str, laptop: EnrolledHost) -> dict[str, Any]:
    """alice asks for work on laptop-b, whose engine is away, and for work anywhere: the first
    waits (`no_schedulable_host`, saying the engine stopped answering), the second runs on
    `laptop`. The waiting allocation, as the API shows it."""
    status, waiting = await alice.call(
        "POST",
        "/v1/allocations",
        {
            "cpus": 0.25,
            "memory": "64M",
            "disk": "64M",
            "image": image,
            "command": ["sleep", "600"],
            "constraints": {"name": "laptop-b"},
        },
    )
    assert status == 202, waiting  # accepted, not placed: it waits
    elsewhere = await alice.create()
    assert elsewhere["host_id"] == laptop.host_id, elsewhere
    await asyncio.sleep(3)  # the allocator's rounds look at the queue meanwhile
    waiting = await alice.get(waiting["id"])
    assert waiting["state"] == "pending", waiting
    assert waiting["waiting"]["reason"] == "no_schedulable_host", waiting
    assert "Docker engine stopped answering" in waiting["waiting"]["message"], waiting
    return waiting


async def member_reads_engine_away(pool: Pool, b: EnrolledHost) -> dict[str, Any]:
    """laptop-b's member's `host status` says it is online with its engine away, and nothing new
    is placed there; the operator's host list says the engine is away too. That status."""
    shown = member(b, "status")
    assert shown.returncode == 0, shown.stderr
    host: dict[str, Any] = json.loads(shown.stdout)
    assert host["liveness"] == "online", host
    assert host["engine_away"] is not None, host
    assert "nothing new is placed here" in host["engine_away"]["means"], host
    listed = await hosts_listed(pool)
    assert listed[b.host_id]["engine_away"] is not None, listed
    return host


async def engine_back_and_waiting_work_placed(
    pool: Pool, engine: DockerEngine, b: EnrolledHost, alice: User, waiting: dict[str, Any]
) -> dict[str, Any]:
    """laptop-b's engine is started: its return is recorded after its loss, alice's `waiting`
    allocation runs there, and its member's `host status` no longer says the engine is away;
    that status."""
    await asyncio.to_thread(engine.start)
    await until(lambda: _not(engine_away(pool, b.host_id)), "laptop-b's engine recorded back", pool)
    types = [r.type for r in await pool.store.read_stream(host_stream(b.host_id))]
    assert types.index("HostEngineReturned") > types.index("HostEngineLost"), types
    status, placed = await alice.call("GET", f"/v1/allocations/{waiting['id']}?wait=running&timeout=90")
    assert status == 200, placed
    assert placed["state"] == "running", (placed, pool.logs())
    assert placed["host_id"] == b.host_id, placed
    host: dict[str, Any] = json.loads(member(b, "status").stdout)
    assert host["engine_away"] is None, host
    return host


async def hosts_listed(pool: Pool) -> dict[str, dict[str, Any]]:
    """`potluck ops hosts list --json`, by host id."""
    code, out, err = await ops("hosts", "list", "--json", "--database-url", pool.database_url)
    assert code == 0, out + err
    return {row["host_id"]: row for row in map(json.loads, out.splitlines())}


@pytest.mark.slow
async def test_a_laptop_whose_engine_stopped_takes_no_work_says_so_and_takes_work_again(
    pool: Pool, laptop: EnrolledHost, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Tried: alice runs work on laptop-b; laptop-a, with its own host key, publishes an engine
    report on laptop-b's subject; then laptop-b's Docker engine is stopped while its hostd
    runs on, and alice asks for work constrained to laptop-b and for work anywhere; then the
    engine is started again.
    Must hold: laptop-a's report is refused by NATS and changes nothing of laptop-b; once the
    engine is away the log has HostEngineLost and laptop-b is not schedulable: the constrained
    request is not placed but waits (`no_schedulable_host`, naming the Docker engine), the other
    goes to laptop-a and runs; the member's `host status`, the operator's `ops hosts list` and
    `ops status`, and alice's view of her allocation there (`condition`, `alloc ls`, `alloc show`)
    say the engine is away and what it means; hostd keeps running. Once the engine is back the
    log has HostEngineReturned, the waiting request is placed on laptop-b and runs, the
    statuses say nothing of the engine any more, and replay agrees."""
    await pool.wait_api()
    engine = DockerEngine(tmp_path / "laptop-b-engine")
    await asyncio.to_thread(engine.start)
    try:
        await asyncio.to_thread(build_test_image, engine.url)
        b = await start_laptop(pool, engine, "laptop-b")
        assert b.process is not None
        alice = User(http, pool, await pool.add_user("alice"))
        mine = await alice.create(constraints={"name": "laptop-b"}, command=None)  # interactive
        assert mine["host_id"] == b.host_id

        # Another host cannot speak for laptop-b's engine: NATS refuses the subject.
        errors: list[str] = []
        as_a = await pool.client(laptop, errors=errors)
        said = EngineStatus(available=False, detail="laptop-a says B's engine is gone")
        await as_a.publish(f"potluck.report.{b.host_id}.engine", said.model_dump_json().encode())
        await as_a.flush()
        await until(lambda: asyncio.sleep(0, bool(errors)), "NATS refusing laptop-a's publish", pool)
        assert any("permissions violation" in e.lower() for e in errors), errors
        await asyncio.sleep(2)
        assert not await engine_away(pool, b.host_id)

        await asyncio.to_thread(engine.stop)
        await until(lambda: engine_away(pool, b.host_id), "laptop-b's engine recorded away", pool)
        assert b.process.running(), b.process.log_tail(40)
        await allocator_knows_engine_away(pool, b.host_id)

        # New work: not placed on laptop-b, and the waiting one says why.
        waiting = await waits_for_laptop_b(alice, mine["image"], laptop)

        # The member, the operator, the user: each reads that the engine is away.
        host = await member_reads_engine_away(pool, b)
        assert "Docker engine stopped answering" in host["engine_away"]["means"], host
        listed = await hosts_listed(pool)
        assert listed[laptop.host_id]["engine_away"] is None, listed
        code, out, err = await ops("hosts", "list", "--table", "--database-url", pool.database_url)
        assert code == 0, err
        row = next(line for line in out.splitlines() if b.host_id in line)
        assert "Docker engine away since" in row, out
        assert "nothing is placed here" in row, out
        assert "until its member starts Docker there" in row, out  # what would end it
        code, out, err = await ops("status", "--json", "--database-url", pool.database_url)
        assert code == 0, err
        pool_hosts = {h["host_id"]: h for h in json.loads(out)["hosts"]}
        assert pool_hosts[b.host_id]["engine_away"] is not None, out
        mine = await alice.until(
            mine["id"],
            "told its host's engine is away",
            lambda a: (a["condition"] or {}).get("cause") == "engine",
        )
        assert mine["condition"]["state"] == "waiting_for_host", mine
        assert "Docker engine on its host stopped answering" in mine["condition"]["reason"], mine
        listing = await alice.potluck("alloc", "ls")
        line = next(line for line in listing.splitlines() if mine["id"] in line)
        assert "Docker engine is away since" in line, listing
        assert "Docker engine is away since" in await alice.potluck("alloc", "show", mine["id"])

        # The engine returns: recorded, and laptop-b takes work again.
        await engine_back_and_waiting_work_placed(pool, engine, b, alice, waiting)
        assert (await hosts_listed(pool))[b.host_id]["engine_away"] is None
        await replay_agrees(pool)
    finally:
        await asyncio.to_thread(engine.stop)


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


@pytest.mark.slow
async def test_a_laptop_whose_engine_is_not_running_at_start_joins_as_engine_away_then_takes_work(
    pool: Pool, laptop: EnrolledHost, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """What is tried: laptop-b's member starts hostd while laptop-b's Docker engine is not
    running (it ran once, to hold the test image, and was stopped); alice asks for work
    constrained to laptop-b and for work anywhere; then the member starts the engine.
    What must hold: hostd keeps running and registers laptop-b all the same (active, online),
    the log has HostEngineLost and laptop-b is not schedulable: the member's `host status`
    says the engine is away and that Docker must be started, hostd's log says what to do, the
    constrained request waits (`no_schedulable_host`, naming the Docker engine) while the other
    runs on laptop-a. Once the engine answers the log has HostEngineReturned, laptop-b is
    registered with its engine's real facts, the waiting request is placed there and runs,
    and replay agrees. Without the fix hostd never registered laptop-b."""
    await pool.wait_api()
    engine = DockerEngine(tmp_path / "laptop-b-engine")
    await asyncio.to_thread(engine.start)
    try:
        await asyncio.to_thread(build_test_image, engine.url)
    finally:
        await asyncio.to_thread(engine.stop)
    try:
        b = await pool.enroll("laptop-b")
        pool.write_config(b, engine)
        process = pool.start_hostd(b)
        await pool.central_services_ready()
        await pool.wait_for_host(b.host_id, "active")
        await until(lambda: engine_away(pool, b.host_id), "laptop-b's engine recorded away", pool)
        await allocator_knows_engine_away(pool, b.host_id)
        assert process.running(), process.log_tail(40)
        said = process.log_tail(200)
        assert "hostd.engine_unavailable" in said, said
        assert "start the Docker engine on this machine" in said, said

        host = await member_reads_engine_away(pool, b)
        assert "start Docker on this machine" in host["engine_away"]["detail"], host

        alice = User(http, pool, await pool.add_user("alice"))
        waiting = await waits_for_laptop_b(alice, DEFAULT_TAG, laptop)

        # The member starts Docker: hostd finds it on its own, and laptop-b takes work.
        host = await engine_back_and_waiting_work_placed(pool, engine, b, alice, waiting)
        assert host["engine"]["version"] == engine.info()["ServerVersion"], host
        assert process.running(), process.log_tail(40)
        await replay_agrees(pool)
    finally:
        await asyncio.to_thread(engine.stop)
