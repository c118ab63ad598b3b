"""Users are told what their allocation's host does, and the allocator acts on long freezes.

A real pool (NATS, Postgres, registry, allocator, hostd on private Docker
engines). The host's sleep is real where it can be (hostd stopped with
SIGSTOP: the registry finds it unreachable) and announced where it cannot:
HostSleeping, HostThrottled, HostFrozen and HostShareRestored are appended to
the host's stream as the registry records them for hostd. Users read the
result through the HTTP API and the real `potluck alloc ls/show` commands;
the operator's `potluck ops replay --check` must agree with the running
allocator afterwards.

Liveness is slowed (beats every 0.5 s, unreachable after 3 s of silence, lost
only after 10 minutes): a busy test machine must not make the host
unreachable of its own accord while a test reads its throttle or freeze.
"""

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

from potluck.contracts.host_events import (
    HostFrozen,
    HostShareRestored,
    HostSleeping,
    HostThrottled,
    host_stream,
)
from potluck.events import Event
from potluck.hostd.docker_driver import DockerDriver
from potluck.kernel.sizes import format_size
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.user.cli import local_time
from tests.e2e.conftest import member, replay_agrees
from tests.fixtures.pool import EnrolledHost, Pool
from tests.helpers import wait_until

pytestmark = pytest.mark.liveness(0.5, 6, 600.0)


class User:
    def __init__(self, http: aiohttp.ClientSession, pool: Pool, token: str) -> None:
        self.http = http
        self.pool = pool
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.pool.api + path, json=body, headers=self.headers) as r:
            return r.status, await r.json()

    async def get(self, alloc_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/allocations/{alloc_id}")
        assert status == 200, body
        return dict(body)

    async def create(self, **extra: Any) -> dict[str, Any]:
        body = {
            "cpus": 0.25,
            "memory": "64M",
            "disk": "64M",
            "image": DEFAULT_TAG,
            "command": ["sleep", "3600"],
        }
        status, created = await self.call("POST", "/v1/allocations", {**body, **extra})
        assert status == 201, created
        status, running = await self.call("GET", f"/v1/allocations/{created['id']}?wait=running&timeout=60")
        assert running["state"] == "running", self.pool.logs()
        return dict(running)

    async def until(self, alloc_id: str, what: str, check: Any, timeout: float = 30) -> dict[str, Any]:
        """The allocation, once `check(allocation)` holds (polled through the API)."""
        seen: dict[str, Any] = {}

        async def poll() -> bool:
            seen.update(await self.get(alloc_id))
            return bool(check(seen))

        deadline = asyncio.get_running_loop().time() + timeout
        while not await poll():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{alloc_id}: not {what} after {timeout}s: {seen}\n{self.pool.logs()}")
            await asyncio.sleep(0.1)
        return seen

    async def potluck(self, *args: str) -> str:
        """The real `potluck` user command, logged in as this user through the environment; its
        output, once it exited 0."""
        code, out, err = await self.potluck_ends(*args)
        assert code == 0, out + err
        return out

    async def potluck_ends(self, *args: str) -> tuple[int, str, str]:
        """As `potluck`, whatever its exit code: (code, stdout, stderr)."""
        env = {
            **os.environ,
            "POTLUCK_URL": self.pool.api,
            "POTLUCK_TOKEN": self.token,
            "POTLUCK_CONFIG": str(self.pool.workdir / f"absent-{self.token[:8]}.toml"),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "potluck",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def record(pool: Pool, host_id: str, event: Event) -> None:
    """As the registry records what hostd says of its machine."""
    await pool.store.append(host_stream(host_id), [event])


async def second_host(pool: Pool, engine: DockerEngine) -> EnrolledHost:
    host = await pool.enroll("laptop-b")
    pool.write_config(host, engine)
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    return host


def row_of(listing: str, alloc_id: str) -> str:
    return next(line for line in listing.splitlines() if alloc_id in line)


async def test_users_see_their_host_away_throttled_and_frozen_and_placement_avoids_it(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine], http: aiohttp.ClientSession
) -> None:
    """What is tried: alice's container runs on laptop-a; its hostd is stopped (SIGSTOP), then
    the host is announced asleep, then hostd resumes; the owner policy throttles the host,
    then freezes it, then restores the pool's share. New allocations are asked for meanwhile.
    What must hold: through the API and `potluck alloc ls/show`, alice sees her allocation
    running and waiting for its host (unreachable, then asleep) since it went, then throttled
    and frozen with the policy's reason and since when, then nothing; bob never sees it; new
    work goes to laptop-b while laptop-a is throttled (though best fit would choose the fuller
    laptop-a) and while it is frozen; the allocations keep running throughout; replay agrees."""
    await pool.wait_api()
    alice = User(http, pool, await pool.add_user("alice"))
    bob = User(http, pool, await pool.add_user("bob"))
    mine = await alice.create()
    alloc_id = mine["id"]
    assert mine["host_id"] == laptop.host_id
    assert mine["condition"] is None
    assert mine["on_preempt"] == "wait"

    # Away: hostd stops beating (a closed lid without notice), then the sleep is announced.
    assert laptop.process is not None
    assert laptop.process.pid is not None
    os.kill(laptop.process.pid, signal.SIGSTOP)
    try:
        away = await alice.until(
            alloc_id, "waiting for its host", lambda a: (a["condition"] or {}).get("cause") == "unreachable"
        )
        assert away["state"] == "running"
        assert away["condition"]["state"] == "waiting_for_host"
        hosts = await pool.hosts()
        assert away["condition"]["since"].replace("Z", "+00:00") == (
            hosts.hosts[laptop.host_id].liveness_since.isoformat()  # type: ignore[union-attr]
        )
        await record(pool, laptop.host_id, HostSleeping(host_id=laptop.host_id))
        asleep = await alice.until(
            alloc_id, "asleep", lambda a: (a["condition"] or {}).get("cause") == "asleep"
        )
        assert asleep["state"] == "running"
        listing = await alice.potluck("alloc", "ls")
        assert "running (waiting for host since" in row_of(listing, alloc_id)
        assert "asleep)" in row_of(listing, alloc_id)
        shown = await alice.potluck("alloc", "show", alloc_id)
        assert "waiting for its host since" in shown
        _, theirs = await bob.call("GET", "/v1/allocations")
        assert theirs["allocations"] == []
        status, _ = await bob.call("GET", f"/v1/allocations/{alloc_id}")
        assert status == 404
    finally:
        os.kill(laptop.process.pid, signal.SIGCONT)
    await alice.until(alloc_id, "back", lambda a: a["condition"] is None)
    await pool.wait_for_host(laptop.host_id, "active")
    other = await second_host(pool, docker_engines[1])

    # Throttled: still running, told why; new work goes to the host that is not throttled.
    await record(
        pool,
        laptop.host_id,
        HostThrottled(
            host_id=laptop.host_id, cause="owner", reason="the owner uses 1.3 CPUs", share_cpus=0.5
        ),
    )
    throttled = await alice.until(
        alloc_id, "throttled", lambda a: (a["condition"] or {}).get("state") == "throttled"
    )
    assert throttled["state"] == "running"
    assert throttled["condition"]["reason"] == "the owner uses 1.3 CPUs"
    assert throttled["condition"]["cause"] == "owner"
    assert throttled["condition"]["share_cpus"] == 0.5
    assert throttled["condition"]["since"]
    listing = await alice.potluck("alloc", "ls")
    assert "running (throttled since" in row_of(listing, alloc_id)
    assert "the owner uses 1.3 CPUs)" in row_of(listing, alloc_id)
    elsewhere = await alice.create()
    assert elsewhere["host_id"] == other.host_id
    assert elsewhere["condition"] is None

    # Frozen: nothing new lands on it; the user reads the policy's reason.
    await record(
        pool,
        laptop.host_id,
        HostFrozen(host_id=laptop.host_id, cause="window", reason="the member's hours: 09:00-18:00"),
    )
    frozen = await alice.until(alloc_id, "frozen", lambda a: (a["condition"] or {}).get("state") == "frozen")
    assert frozen["condition"]["reason"] == "the member's hours: 09:00-18:00"
    assert frozen["condition"]["share_cpus"] is None
    shown = await alice.potluck("alloc", "show", alloc_id)
    assert "frozen since" in shown
    assert "the member's hours: 09:00-18:00" in shown
    listed = json.loads(await alice.potluck("alloc", "ls", "--json"))
    assert next(a for a in listed if a["id"] == alloc_id)["condition"]["state"] == "frozen"
    again = await alice.create()
    assert again["host_id"] == other.host_id
    _, answer = await alice.call("GET", "/v1/pool")
    assert {h["host_id"] for h in answer["hosts"]} == {laptop.host_id, other.host_id}

    # Restored: nothing to tell any more, and it ran throughout.
    await record(pool, laptop.host_id, HostShareRestored(host_id=laptop.host_id))
    restored = await alice.until(alloc_id, "restored", lambda a: a["condition"] is None)
    assert restored["state"] == "running"
    assert "running" in row_of(await alice.potluck("alloc", "ls"), alloc_id)
    assert "(" not in row_of(await alice.potluck("alloc", "ls"), alloc_id)
    _, history = await alice.call("GET", f"/v1/allocations/{alloc_id}/events")
    assert [e["type"] for e in history["events"]] == [
        "AllocationRequested",
        "AllocationPlaced",
        "AllocationRunning",
    ]
    await replay_agrees(pool)


async def test_frozen_past_the_members_limit_release_ends_and_wait_keeps_its_allocation(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine], http: aiohttp.ClientSession
) -> None:
    """What is tried: two allocations on laptop-a, one created with `potluck alloc create
    --on-preempt release`, one with the default; the owner policy freezes the host with
    max_frozen_s=1 and keeps it frozen. What must hold: the first is released by the policy,
    its reason and frozen_too_long mark visible, its capacity freed and its container removed by
    hostd; the second is marked
    (once, however many rounds pass) and stays running and frozen; a new request meanwhile
    waits (pending: the only host is frozen); after the share is restored the marked one runs
    with no condition and the waiting one is placed there; replay agrees with the running
    allocator."""
    await pool.wait_api()
    alice = User(http, pool, await pool.add_user("alice"))
    created = json.loads(
        await alice.potluck(
            "alloc",
            "create",
            "--cpus",
            "0.25",
            "--memory",
            "64M",
            "--disk",
            "64M",
            "--image",
            DEFAULT_TAG,
            "--on-preempt",
            "release",
            "--wait",
            "--json",
            "--",
            "sleep",
            "3600",
        )
    )
    assert created["on_preempt"] == "release"
    assert created["state"] == "running"
    releasing = created["id"]
    waiting = (await alice.create())["id"]

    await record(
        pool,
        laptop.host_id,
        HostFrozen(host_id=laptop.host_id, cause="battery", reason="on battery", max_frozen_s=1),
    )
    released = await alice.until(releasing, "released", lambda a: a["state"] == "released")
    assert "longer than the member allows (1s)" in released["reason"]
    assert released["frozen_too_long"]["max_frozen_s"] == 1
    assert released["frozen_too_long"]["frozen_s"] > 1
    kept = await alice.until(waiting, "marked", lambda a: a["frozen_too_long"] is not None)
    assert kept["state"] == "running"
    assert kept["condition"]["state"] == "frozen"
    assert kept["condition"]["reason"] == "on battery"
    shown = await alice.potluck("alloc", "show", waiting)
    assert "frozen too long" in shown
    assert "on_preempt=wait" in shown
    assert "released (frozen too long)" in row_of(await alice.potluck("alloc", "ls"), releasing)

    # Later rounds (the allocator looks once a second) mark nothing more.
    await asyncio.sleep(3)
    _, history = await alice.call("GET", f"/v1/allocations/{waiting}/events")
    assert [e["type"] for e in history["events"]].count("AllocationFrozenTooLong") == 1
    _, history = await alice.call("GET", f"/v1/allocations/{releasing}/events")
    assert [e["type"] for e in history["events"]][-2:] == ["AllocationFrozenTooLong", "AllocationReleased"]
    freed = [
        r for r in await pool.store.read_stream(f"capacity-{laptop.host_id}") if r.type == "CapacityFreed"
    ]
    assert [r.data["alloc_id"] for r in freed] == [releasing]
    # hostd removes the released container and keeps the other.
    with DockerDriver(docker_engines[0].url) as driver:

        def containers() -> set[str]:
            return {c.allocation_id for c in driver.list_managed(laptop.host_id)}

        await wait_until(lambda: releasing not in containers(), 30, "the released container to go")
        assert waiting in containers()

    # The only host is frozen: a new request waits for it, and is placed once it resumes.
    body = {"cpus": 0.25, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "60"]}
    status, queued = await alice.call("POST", "/v1/allocations", body)
    assert status == 202, queued
    assert queued["state"] == "pending"
    # A script's way (-q: only the id on stdout) to one that is refused while it waits: the
    # refusal's reason is on stderr (it said only "... is refused, not running").
    code, out, err = await alice.potluck_ends(
        "alloc", "create", "--cpus", "0.25", "--memory", "64M", "--disk", "64M", "--image", DEFAULT_TAG,
        "--queue-timeout", "1s", "-q", "--wait", "--", "sleep", "60",
    )  # fmt: skip
    assert code == 1, out + err
    said = f"allocation {out.strip()} is refused, not running: QUEUE_TIMEOUT: no host that could hold it took"
    assert said in err, err
    assert "frozen by their owner" in err, err
    await record(pool, laptop.host_id, HostShareRestored(host_id=laptop.host_id))
    back = await alice.until(waiting, "restored", lambda a: a["condition"] is None)
    assert back["state"] == "running"
    assert back["frozen_too_long"] is not None  # kept in the record
    resumed = await alice.until(queued["id"], "placed", lambda a: a["state"] == "running")
    assert resumed["host_id"] == laptop.host_id
    await replay_agrees(pool)


async def test_a_pending_allocation_says_why_it_waits_and_where_it_stands_in_the_queue(
    pool: Pool, laptop: EnrolledHost, http: aiohttp.ClientSession
) -> None:
    """What is tried: alice fills the only host, then asks for two more and bob for one; then the
    host is frozen by its owner's policy, then restored, and alice's big allocation released.
    What must hold: each pending allocation says why it waits (no free capacity, then only a
    host that takes no work) and where it stands in the fair queue (bob's first: he holds nothing
    and alice the whole host; then alice's, in the order asked), in the API's answers to POST,
    GET and the listing, and in `potluck alloc ls/show` and on the web page; bob sees only his
    own; once placed, nothing is said any more."""
    alice = User(http, pool, await pool.add_user("alice"))
    bob = User(http, pool, await pool.add_user("bob"))
    _, answer = await alice.call("GET", "/v1/pool")
    donated = answer["hosts"][0]["donated"]["cpus"]
    big = await alice.create(cpus=donated)
    body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "600"]}
    queued = []
    for user in (alice, bob, alice):
        status, created = await user.call("POST", "/v1/allocations", body)
        assert status == 202, created
        queued.append(created)
    first, bobs, second = queued
    assert first["waiting"]["reason"] == "no_free_capacity", first
    assert (first["waiting"]["position"], first["waiting"]["queue_length"]) == (1, 1)
    assert "no host has that much free" in first["waiting"]["message"]
    assert big["waiting"] is None

    for user, created, position in ((bob, bobs, 1), (alice, first, 2), (alice, second, 3)):
        shown = await user.get(created["id"])
        assert shown["waiting"]["reason"] == "no_free_capacity", shown
        assert (shown["waiting"]["position"], shown["waiting"]["queue_length"]) == (position, 3)
    _, listed = await alice.call("GET", "/v1/allocations?state=pending")
    assert [(a["id"], a["waiting"]["position"]) for a in listed["allocations"]] == [
        (first["id"], 2),
        (second["id"], 3),
    ]
    _, theirs = await bob.call("GET", "/v1/allocations")
    assert [a["id"] for a in theirs["allocations"]] == [bobs["id"]]
    listing = await alice.potluck("alloc", "ls")
    assert "pending (2 of 3 in the queue)" in row_of(listing, first["id"])
    assert "pending (3 of 3 in the queue)" in row_of(listing, second["id"])
    shown_text = await alice.potluck("alloc", "show", first["id"])
    assert "why it waits: no host has that much free" in shown_text
    # The web page, signed in as a browser would be (a loopback page counts as a secure origin).
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[pool.api])
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.post(
            f"{pool.api}/web/signin", data={"token": alice.token}, headers={"Origin": pool.api}
        ) as r:
            assert r.status == 200, await r.text()
        async with browser.get(f"{pool.api}/web/allocations/{second['id']}") as r:
            page = await r.text()
    assert "why it waits" in page, page
    assert "3 of 3 in the queue: no host has that much free" in page, page

    await record(
        pool, laptop.host_id, HostFrozen(host_id=laptop.host_id, cause="battery", reason="on battery")
    )
    frozen = await alice.until(
        first["id"], "waiting on a frozen host", lambda a: a["waiting"]["reason"] == "no_schedulable_host"
    )
    assert "only hosts that are away, paused, draining or frozen" in frozen["waiting"]["message"]
    await record(pool, laptop.host_id, HostShareRestored(host_id=laptop.host_id))
    await alice.until(
        first["id"], "waiting for capacity again", lambda a: a["waiting"]["reason"] == "no_free_capacity"
    )

    status, _ = await alice.call("DELETE", f"/v1/allocations/{big['id']}")
    assert status == 200
    placed = await alice.until(first["id"], "running", lambda a: a["state"] == "running")
    assert placed["waiting"] is None
    await replay_agrees(pool)


async def test_a_wait_on_disk_held_by_the_users_kept_containers_names_them_and_how_to_free_it(
    pool: Pool, laptop: EnrolledHost, http: aiohttp.ClientSession
) -> None:
    """What is tried: alice runs a command that takes the host's whole free disk and keeps its
    stopped container 10 minutes (as a job's finished task does, 1 h by default); once it has
    exited she asks for another allocation. What must hold: the second waits, and why (in the
    API's answer and in `potluck alloc show`) names the kept container as hers and the command
    that frees its disk (before, only "no host has that much free", while the pool's CPUs and
    memory stood free); once she runs that command, the second is placed and runs; replaying
    the log agrees with what the allocator holds."""
    alice = User(http, pool, await pool.add_user("alice"))
    _, answer = await alice.call("GET", "/v1/pool")
    disk = answer["hosts"][0]["free"]["disk"]
    body = {"cpus": 0.25, "memory": "64M", "image": DEFAULT_TAG}
    status, done = await alice.call(
        "POST", "/v1/allocations", {**body, "disk": disk, "command": ["true"], "keep_for": 600}
    )
    assert status == 201, done
    await alice.until(done["id"], "exited", lambda a: a["state"] == "exited", timeout=60)
    status, waiting = await alice.call(
        "POST", "/v1/allocations", {**body, "disk": "64M", "command": ["sleep", "600"]}
    )
    assert status == 202, waiting
    message = waiting["waiting"]["message"]
    assert "no host has that much free" in message, message
    assert f"1 stopped container(s) kept for their logs and files hold {format_size(disk)}" in message
    assert f"1 of them yours: `potluck alloc rm {done['id']}` removes one now" in message, message
    shown = await alice.potluck("alloc", "show", waiting["id"])
    assert f"potluck alloc rm {done['id']}" in shown, shown
    # Its row says it exited, with what code, and that its container is kept (and until when, in
    # local time as every time `potluck` prints); its lifetime's end no longer matters.
    kept_until = local_time((await alice.get(done["id"]))["kept_until"])
    row = row_of(await alice.potluck("alloc", "ls"), done["id"])
    assert f"exited 0 (kept until {kept_until})" in row, row
    assert row.rstrip().endswith(" -"), row
    await alice.potluck("alloc", "rm", done["id"])
    running = await alice.until(waiting["id"], "placed", lambda a: a["state"] == "running", timeout=60)
    assert running["waiting"] is None
    listing = await alice.potluck("alloc", "ls")
    assert "exited 0 (container removed)" in row_of(listing, done["id"]), listing
    assert row_of(listing, running["id"]).rstrip().endswith(local_time(running["expires_at"])), listing
    await replay_agrees(pool)


async def test_users_see_the_member_pause_and_drain_their_host(
    pool: Pool, laptop: EnrolledHost, http: aiohttp.ClientSession
) -> None:
    """What is tried: alice's container runs on laptop-a; its member pauses the machine with
    `potluck host pause`, resumes it, then drains it with a grace of ten minutes. What must
    hold: through the API and `potluck alloc ls/show`, alice sees her allocation running and
    frozen by the member (cause `member`) while paused, nothing once resumed, and draining with
    the time her container will be stopped (`until`, ten minutes after the drain began) while
    the host drains; replay agrees."""
    await pool.wait_api()
    alice = User(http, pool, await pool.add_user("alice"))
    mine = await alice.create()
    alloc_id = mine["id"]
    assert mine["host_id"] == laptop.host_id

    paused = await asyncio.to_thread(member, laptop, "pause")
    assert paused.returncode == 0, paused.stderr
    frozen = await alice.until(alloc_id, "paused", lambda a: (a["condition"] or {}).get("cause") == "member")
    assert frozen["state"] == "running"
    assert frozen["condition"]["state"] == "frozen"
    assert frozen["condition"]["since"]
    assert "member paused it" in row_of(await alice.potluck("alloc", "ls"), alloc_id)

    resumed = await asyncio.to_thread(member, laptop, "resume")
    assert resumed.returncode == 0, resumed.stderr
    await alice.until(alloc_id, "resumed", lambda a: a["condition"] is None)

    drained = await asyncio.to_thread(member, laptop, "drain", "--grace", "600")
    assert drained.returncode == 0, drained.stderr
    draining = await alice.until(
        alloc_id, "draining", lambda a: (a["condition"] or {}).get("state") == "draining"
    )
    condition = draining["condition"]
    assert condition["cause"] == "member"
    since = datetime.fromisoformat(condition["since"].replace("Z", "+00:00"))
    until = datetime.fromisoformat(condition["until"].replace("Z", "+00:00"))
    assert until - since == timedelta(seconds=600)
    shown = await alice.potluck("alloc", "show", alloc_id)
    assert "draining since" in shown
    assert "stopped at" in shown
    await replay_agrees(pool)
