"""What a hostile member can do with their own credentials, speaking NATS directly: every
message their host may publish is refused with a logged reason when it is bad, nothing of
anyone else's is lost, and the services keep serving (the real pool: NATS with nkeys,
Postgres, registry, allocator)."""

import asyncio
import json
import os
import tomllib
from datetime import datetime
from typing import Any

import aiohttp
import nats
import nats.errors
import nats.js.errors
import nkeys
from nats.aio.client import Client as NATS

from potluck.allocator.image_locality import last_reported
from potluck.allocator.service import IMAGES_RECORD_RATE, RESTARTS_RECORD_RATE, STATE_REPORT_RATE
from potluck.contracts.allocation_events import alloc_stream
from potluck.contracts.capacity import MAX_DONATED_BYTES
from potluck.contracts.host_events import HostRegistered, host_stream
from potluck.contracts.host_images import images_stream
from potluck.contracts.join_token import JoinToken, secret_digest
from potluck.contracts.messages import Heartbeat, Reply
from potluck.contracts.reports import (
    ActualState,
    ContainerExited,
    ContainerFailed,
    ContainerPulling,
    ContainerStarted,
    ContainerStatus,
    EngineStatus,
    ImagesHeld,
    PreviousExit,
    Report,
    UsageSampled,
)
from potluck.contracts.subjects import (
    DESIRED,
    HEARTBEAT,
    REGISTER,
    STATUS,
    host_subject,
    inbox_prefix,
)
from potluck.events import DEAD_LETTER_STREAM, REPORTS_STREAM, Event
from potluck.events.bus import H_DLQ_REASON, H_DLQ_SUBJECT, dead_letter_subject
from potluck.localstack import NatsServer
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.member.join import admitted
from potluck.readmodels.hosts import HostState
from potluck.registry import host as aggregate
from potluck.registry.enrollment import enroll_with_token, refresh_nats_authorization
from potluck.registry.nats_auth import new_user_key, public_key_of
from potluck.registry.repository import decide_on_host
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec
from tests.fixtures.registrations import registration
from tests.helpers import json_log


def _allocator_log(pool: Pool) -> list[dict[str, Any]]:
    return json_log(pool.workdir / "allocator.log")


async def _wait(predicate: Any, what: str, pool: Pool, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{pool.logs()}")
        await asyncio.sleep(0.1)


async def test_a_poison_report_carrying_jetstreams_own_headers_is_dead_lettered_and_the_next_served(
    pool: Pool,
) -> None:
    """Tried: host B publishes, on its own report subjects, messages that are no report and carry
    JetStream's publish expectations, chosen to hold in the reports stream and to fail in the
    dead-letter stream (`Nats-Expected-Stream` naming the reports stream;
    `Nats-Expected-Last-Subject-Sequence: 0` on a subject of its own that is still empty).
    Before: the allocator copied the headers onto the dead letter, JetStream refused that
    publish, and the error ended the allocator's report consumer, and the allocator with it
    (the message stayed unacknowledged, so a restarted allocator met it again). Must hold: each
    is kept as a dead letter with its reason and original subject, and host A's report sent
    afterwards is read and logged by the same allocator process."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    services = await pool.client()
    js = services.jetstream()
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    dlq = dead_letter_subject("allocator-reports")
    allocator_pid = pool.processes["allocator"].pid
    poison = {
        f"potluck.report.{b.host_id}.usage": {"Nats-Expected-Stream": REPORTS_STREAM},
        f"potluck.report.{b.host_id}.failed": {"Nats-Expected-Last-Subject-Sequence": "0"},
    }
    for subject, headers in poison.items():
        ack = await as_b.jetstream().publish(subject, b"not a report", headers=headers)
        assert ack.stream == REPORTS_STREAM  # the report stream took it: the expectation held there

    async def dead_lettered() -> bool:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)
        return (info.state.subjects or {}).get(dlq, 0) >= len(poison)

    await _wait(dead_lettered, "B's two messages dead-lettered", pool)
    mark = EngineStatus(available=True, detail="engine of A after the poison").model_dump_json().encode()
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.engine", mark)

    async def a_logged() -> bool:
        return any(e.get("detail") == "engine of A after the poison" for e in _allocator_log(pool))

    await _wait(a_logged, "A's engine report in the allocator's log", pool)
    assert pool.processes["allocator"].pid == allocator_pid
    assert pool.processes["allocator"].running(), pool.logs()
    info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)
    letters = []
    for seq in range(1, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
        except nats.js.errors.NotFoundError:
            continue
        if msg.subject == dlq and msg.headers is not None:
            letters.append(msg.headers)
    kept = {h[H_DLQ_SUBJECT]: h for h in letters}
    assert set(poison) <= set(kept), kept
    for subject in poison:
        assert "cannot decode" in kept[subject][H_DLQ_REASON]
        # The dead letter says what the host asked of JetStream only as text, never as an order.
        assert not any(name.startswith("Nats-Expected") for name in kept[subject])


async def _connects(pool: Pool, seed: str, host_id: str) -> bool:
    """Does nats-server admit `seed`'s key now (the member's own check, potluck join's)?"""
    return await admitted(pool.nats.url, seed, host_id)


async def _token(pool: Pool, name: str) -> JoinToken:
    """A join token whose throwaway key nats-server admits."""
    token = await enroll_with_token(pool.store, name, nats_url=pool.nats.url)
    await refresh_nats_authorization(pool.store, pool.nats.auth_file, [pool.services_seed], None)
    pool.nats.reload()
    return token


def _seed(host: EnrolledHost) -> str:
    return str(tomllib.loads(host.credentials.read_text())["nats_seed"])


async def test_a_join_naming_a_key_nats_cannot_admit_is_refused_and_the_users_file_stays_loadable(
    pool: Pool,
) -> None:
    """Tried: with a valid join token, a member's machine asks to join naming as its own key
    (a) 56 characters that are no NATS user key, (b) an account's key, (c) the services' public
    key, (d) the public key of a machine already in the pool, (e) the token's own throwaway
    key. Before: the registry recorded each as the host's key and wrote it into the NATS users
    file, which nats-server then refused to load (`Not a valid public nkey for a user`,
    `Duplicate nkey`): every later reload failed, so no machine enrolled afterwards could
    connect and no revoked one was cut off, and a restarted nats-server would not start at
    all. Must hold: each join is refused with a code that says why, nothing is recorded, the
    token stays unspent, and afterwards a machine enrolled later connects (its key reached
    nats-server through a reload) and the same token joins with a key of the machine's own."""
    other = await pool.enroll("laptop-a")
    token = await _token(pool, "laptop-b")
    account = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))
    bad_keys = {
        "not a key": "U" + "A" * 55,
        "an account's key": account.public_key.decode(),
        "the services' key": public_key_of(pool.services_seed),
        "another machine's key": public_key_of(_seed(other)),
        "the token's own throwaway key": public_key_of(token.join_seed),
    }
    for what, bad in bad_keys.items():
        reply = await pool.redeem_join(token, bad)
        assert not reply.ok, (what, reply)
        assert reply.error is not None
        assert reply.error["code"] in ("BAD_REQUEST", "NKEY_TAKEN"), (what, reply.error)
        state = (await pool.hosts()).hosts[token.host_id]
        assert state.nkey == "", (what, state)
        assert state.join_nkey, f"{what}: the token is still unspent"
    later = await pool.enroll("laptop-later")
    assert await _connects(pool, _seed(later), later.host_id), pool.logs()
    own = new_user_key()
    reply = await pool.redeem_join(token, own.public)
    assert reply.ok, reply
    assert await _connects(pool, own.seed, token.host_id), pool.logs()


async def _record_join(pool: Pool, token: JoinToken, nkey: str, now: datetime) -> None:
    """HostJoined naming `nkey`, decided by the aggregate as a registry without the checks did."""
    digest = secret_digest(token.secret)

    def decide(state: HostState | None) -> list[Event]:
        return aggregate.join(state, token.host_id, token_sha256=digest, nkey=nkey, now=now)

    await decide_on_host(pool.store, token.host_id, decide, {"actor": "test"})


async def test_a_key_nats_cannot_admit_already_in_the_log_is_left_out_of_the_users_file(pool: Pool) -> None:
    """Tried: the log already holds HostJoined events naming keys nats-server cannot load (one
    that is no user key, one that is another machine's), as a registry from before the join's
    checks recorded them. Must hold: every render leaves those keys out and says so, so the
    file still loads and every reload goes through: a machine enrolled afterwards connects. A
    key two hosts claim is left out for both (the file cannot say which of them holds its
    seed): its first holder is cut off until an operator sorts it out, never shared."""
    other = await pool.enroll("laptop-a")
    now = await pool.store.log_clock()
    for name, bad in (("laptop-b", "U" + "A" * 55), ("laptop-c", public_key_of(_seed(other)))):
        token = await enroll_with_token(pool.store, name, nats_url=pool.nats.url)
        await _record_join(pool, token, bad, now)
    later = await pool.enroll("laptop-later")
    assert await _connects(pool, _seed(later), later.host_id), pool.logs()
    assert not await _connects(pool, _seed(other), other.host_id)
    assert isinstance(pool.nats, NatsServer)
    nats_log = pool.nats.log_tail(10_000)
    assert "Failed to reload server configuration" not in nats_log, nats_log


async def test_reports_holding_text_the_log_cannot_store_are_refused_at_once_as_dead_letters(
    pool: Pool,
) -> None:
    """Tried: host B reports images, an engine, and a failure whose texts hold what Postgres'
    JSON cannot store (a NUL, a lone surrogate), valid JSON all of them. Before: the allocator
    took each for a report, failed to log its fact three times over (a database error, with a
    traceback in its log each time, and backoff between), and only then dead-lettered it: a
    host sending them in a loop kept the one report consumer of the pool busy on its own
    messages. Must hold: each is dead-lettered at once, its reason naming the field and what
    is wrong with it (the lone surrogate already fails as JSON); the allocator logs no
    handler failure for them, and host A's report sent afterwards is read."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    services = await pool.client()
    js = services.jetstream()
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    dlq = dead_letter_subject("allocator-reports")
    sent = {
        f"potluck.report.{b.host_id}.images": b'{"kind":"images","images":["docker.io/library/a:\\u0000"]}',
        f"potluck.report.{b.host_id}.engine": b'{"kind":"engine","available":true,"detail":"x\\ud800"}',
        f"potluck.report.{b.host_id}.failed": (
            b'{"kind":"failed","alloc_id":"a-1","reason":"start_failed","detail":"\\u0000"}'
        ),
    }
    for subject, data in sent.items():
        await as_b.jetstream().publish(subject, data)

    async def dead_lettered() -> bool:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)
        return (info.state.subjects or {}).get(dlq, 0) >= len(sent)

    await _wait(dead_lettered, "B's three reports dead-lettered", pool)
    mark = EngineStatus(available=True, detail="engine of A after B's texts").model_dump_json().encode()
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.engine", mark)

    async def a_logged() -> bool:
        return any(e.get("detail") == "engine of A after B's texts" for e in _allocator_log(pool))

    await _wait(a_logged, "A's engine report in the allocator's log", pool)
    reasons = {}
    info = await js.stream_info(DEAD_LETTER_STREAM)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
        if msg.subject == dlq and msg.headers is not None:
            reasons[msg.headers[H_DLQ_SUBJECT]] = msg.headers[H_DLQ_REASON]
    assert set(sent) <= set(reasons), reasons
    assert "images" in reasons[f"potluck.report.{b.host_id}.images"]
    assert "NUL" in reasons[f"potluck.report.{b.host_id}.images"]
    # A lone surrogate is not even JSON to the report's parser.
    assert "Invalid JSON" in reasons[f"potluck.report.{b.host_id}.engine"]
    assert "NUL" in reasons[f"potluck.report.{b.host_id}.failed"]
    failures = [e for e in _allocator_log(pool) if e.get("event") == "subscriber.handler_failed"]
    assert failures == [], failures


def _registration(name: str, memory_bytes: int, disk_bytes: int) -> dict[str, Any]:
    """A registration as a hostd of this version sends it, with the donation given."""
    return registration(
        cpus=2, memory_bytes=memory_bytes, disk_bytes=disk_bytes, labels={"name": name}, allowed_images=["*"]
    )


async def _beat(nc: NATS, host_id: str) -> None:
    """The host's heartbeats, as hostd sends them, until cancelled."""
    while True:
        await nc.publish(host_subject(HEARTBEAT, host_id), Heartbeat().model_dump_json().encode())
        await asyncio.sleep(0.2)


async def test_a_donation_past_any_machine_is_refused_and_one_already_logged_breaks_no_placement(
    pool: Pool,
) -> None:
    """Tried: host B registers donating 10**400 bytes of memory (and then of disk). Then a
    registration like it is put in the log directly, as a registry from before the bound
    recorded it, while B beats. Before: the registry recorded it, and the allocator's
    scheduler turned the bytes into a float for its score: every user's request for an
    allocation failed with INTERNAL (OverflowError), anywhere in the pool, as did the pool's
    web page. Must hold: each registration is refused with BAD_REQUEST naming the field and
    the bound, and records nothing; with the old registration in the log, the allocator reads
    it as the most a host may donate: a user's request is placed, and the pool's API and web
    page answer."""
    b = await pool.enroll("laptop-b")
    token = await pool.add_user("ann")
    as_b = await pool.client(b)
    head = await pool.store.head_position()
    for field, body in (
        ("memory_bytes", _registration("laptop-b", 10**400, 1 << 34)),
        ("disk_bytes", _registration("laptop-b", 1 << 34, 10**400)),
    ):
        msg = await as_b.request(f"{REGISTER}.{b.host_id}", json.dumps(body).encode(), timeout=10)
        reply = Reply.model_validate_json(msg.data)
        assert not reply.ok, reply
        assert reply.error is not None
        assert reply.error["code"] == "BAD_REQUEST", reply.error
        assert f"donated.{field}: at most {MAX_DONATED_BYTES} bytes" in reply.error["message"], reply.error
    assert await pool.store.stream_version(host_stream(b.host_id)) == 1  # HostEnrolled only
    assert [e for e in await pool.store.read_all(head) if e.stream == host_stream(b.host_id)] == []

    old = HostRegistered.model_validate({**_registration("laptop-b", 10**400, 10**400), "host_id": b.host_id})
    await pool.store.append(host_stream(b.host_id), [old], metadata={"actor": "test"})
    beats = asyncio.create_task(_beat(as_b, b.host_id))
    try:
        await pool.wait_for_host(b.host_id, "active")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["true"]}
            async with http.post(f"{pool.api}/v1/allocations", json=body) as response:
                created = await response.json()
                assert response.status in (201, 202), created
            async with http.get(f"{pool.api}/v1/pool") as response:
                listed = await response.json()
                assert response.status == 200, listed
            [row] = [h for h in listed["hosts"] if h["host_id"] == b.host_id]
            assert row["donated"]["memory"] == MAX_DONATED_BYTES, row
            async with http.get(f"{pool.api}/") as response:
                assert response.status == 200, await response.text()
    finally:
        beats.cancel()
    assert pool.processes["allocator"].running(), pool.logs()


async def test_a_host_reporting_on_another_hosts_allocation_changes_nothing_and_is_told_apart(
    pool: Pool,
) -> None:
    """Tried: an allocation is placed on host B; host A, with its own credentials, reports it
    started, pulling, exited with code 0, failed, and, in its state report, as one of its own
    stopped containers; and reports on an allocation that never was. Must hold: B's allocation
    stays as placed (its version does not move: no fact of A's making reaches it), each of A's
    reports on it is a dead letter whose reason says it is not placed on A, the unknown one's
    says so, and B's own report afterwards is taken (the allocation runs)."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    alloc_id = "a-of-b"
    await place(pool.store, b.host_id, alloc_id, spec())
    before = await allocation(pool.store, alloc_id)
    assert before is not None
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    services = await pool.client()
    js = services.jetstream()
    dlq = dead_letter_subject("allocator-reports")
    start = (await js.stream_info(DEAD_LETTER_STREAM)).state.last_seq
    forged: dict[str, Report] = {
        "started": ContainerStarted(alloc_id=alloc_id, container_id="c-a"),
        "pulling": ContainerPulling(alloc_id=alloc_id, image=DEFAULT_TAG, done_bytes=1, total_bytes=2),
        "exited": ContainerExited(alloc_id=alloc_id, container_id="c-a", exit_code=0, oom_killed=False),
        "failed": ContainerFailed(alloc_id=alloc_id, reason="start_failed", detail="forged"),
        "dead_letter": ContainerExited(alloc_id="never-was", container_id="c", exit_code=1, oom_killed=False),
    }
    for subject_kind, report in forged.items():
        await as_a.jetstream().publish(
            f"potluck.report.{a.host_id}.{subject_kind}", report.model_dump_json().encode()
        )
    state = ActualState(
        as_of_position=await pool.store.head_position(),
        containers=[ContainerStatus(alloc_id=alloc_id, container_id="c-a", running=False, exit_code=0)],
    )
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.state", state.model_dump_json().encode())

    async def reasons() -> list[str]:
        info = await js.stream_info(DEAD_LETTER_STREAM)
        found = []
        for seq in range(start + 1, info.state.last_seq + 1):
            msg = await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
            if msg.subject == dlq and msg.headers is not None:
                found.append(msg.headers[H_DLQ_REASON])
        return found

    async def all_refused() -> bool:
        return len(await reasons()) >= len(forged)

    await _wait(all_refused, "A's reports on B's allocation dead-lettered", pool)
    said = await reasons()
    not_placed = f"host {a.host_id} reported on allocation {alloc_id}, which is not placed there"
    assert sum(not_placed in r for r in said) == len(forged) - 1, said
    assert any(f"host {a.host_id} reported on unknown allocation never-was" in r for r in said), said
    # The state report names no allocation of A's: it decides nothing (and is no dead letter).
    after = await allocation(pool.store, alloc_id)
    assert after is not None
    assert (after.status, after.version, after.host_id) == (before.status, before.version, b.host_id)

    own = ContainerStarted(alloc_id=alloc_id, container_id="c-b")
    await as_b.jetstream().publish(f"potluck.report.{b.host_id}.started", own.model_dump_json().encode())

    async def running() -> bool:
        now = await allocation(pool.store, alloc_id)
        return now is not None and now.status == "running"

    await _wait(running, "B's own report taken", pool)


async def test_a_host_changing_its_images_in_a_loop_logs_a_bounded_number_of_facts(pool: Pool) -> None:
    """Tried: host A reports 60 image sets in a row, each different from the one before (as if
    its engine's images changed 60 times in a moment), then, after a pause, a usage report.
    Before: each set became a HostImagesReported in the log (up to 48 KB each, with no bound
    on how many): a host in a loop could fill the database's disk. Must hold: at most
    IMAGES_RECORD_RATE's burst of them are logged from the loop, the allocator says it held
    the rest back, B's report sent after the loop is read, and A's last set is the one the
    log holds once A reports again after the pause (a set held back is superseded, not lost)."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    sets = 60
    for n in range(sets):
        images = ImagesHeld(images=[f"docker.io/library/loop:{n}", f"docker.io/library/other:{n % 2}"])
        await as_a.jetstream().publish(
            f"potluck.report.{a.host_id}.images", images.model_dump_json().encode()
        )
    mark = EngineStatus(available=True, detail="engine of B after A's images").model_dump_json().encode()
    await as_b.jetstream().publish(f"potluck.report.{b.host_id}.engine", mark)

    async def b_logged() -> bool:
        return any(e.get("detail") == "engine of B after A's images" for e in _allocator_log(pool))

    await _wait(b_logged, "B's engine report in the allocator's log", pool)
    logged = await pool.store.stream_version(images_stream(a.host_id))
    assert 1 <= logged <= IMAGES_RECORD_RATE.burst + 1, logged
    assert any(e.get("event") == "allocator.host_images_held_back" for e in _allocator_log(pool))

    await asyncio.sleep(1 / IMAGES_RECORD_RATE.per_s + 0.5)
    usage = UsageSampled(samples=[]).model_dump_json().encode()
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.usage", usage)
    last = frozenset({f"docker.io/library/loop:{sets - 1}", f"docker.io/library/other:{(sets - 1) % 2}"})

    async def last_set_logged() -> bool:
        held, _ = await last_reported(pool.store, a.host_id)
        return held == last

    await _wait(last_set_logged, "A's last image set in the log", pool)
    assert await pool.store.stream_version(images_stream(a.host_id)) == logged + 1


async def test_a_host_reporting_restarts_in_a_loop_logs_no_more_than_hostds_budget_allows(pool: Pool) -> None:
    """Tried: an allocation placed on host A runs; A then reports, 50 times in a row, that it
    started the allocation's container again after it stopped. Before: each report became an
    AllocationRestarted in the log (with no bound: a host in a loop could grow the log, and
    the allocation's history its user reads, without end). Must hold: at most
    RESTARTS_RECORD_RATE's burst of them are logged (hostd's own restart budget is far
    below it), the allocator says it dropped the rest, and A's report that the container
    exited is still taken afterwards."""
    a = await pool.enroll("laptop-a")
    as_a = await pool.client(a)
    alloc_id = "a-restarts"
    await place(pool.store, a.host_id, alloc_id, spec())
    started = ContainerStarted(alloc_id=alloc_id, container_id="c-a")
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.started", started.model_dump_json().encode())

    async def status_is(status: str) -> bool:
        now = await allocation(pool.store, alloc_id)
        return now is not None and now.status == status

    await _wait(lambda: status_is("running"), "the allocation running", pool)
    for _ in range(50):
        again = ContainerStarted(
            alloc_id=alloc_id, container_id="c-a", restarted_after=PreviousExit(exit_code=137)
        )
        await as_a.jetstream().publish(
            f"potluck.report.{a.host_id}.started", again.model_dump_json().encode()
        )
    exited = ContainerExited(alloc_id=alloc_id, container_id="c-a", exit_code=3, oom_killed=False)
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.exited", exited.model_dump_json().encode())
    await _wait(lambda: status_is("exited"), "the allocation exited", pool)
    records = await pool.store.read_stream(alloc_stream(alloc_id))
    restarts = [r for r in records if r.type == "AllocationRestarted"]
    assert 1 <= len(restarts) <= RESTARTS_RECORD_RATE.burst, len(restarts)
    assert any(e.get("event") == "allocator.host_restarts_dropped" for e in _allocator_log(pool))


async def test_a_host_sending_state_reports_in_a_loop_is_read_at_a_bounded_pace(pool: Pool) -> None:
    """Tried: host A, with 40 allocations placed on it, sends 100 state reports in a row (each
    costs the allocator a read of every allocation on A), then B reports; after a pause, A
    reports its state once more, with one of its containers running. Before: the allocator
    judged every one of A's reports, 4 s of its one report consumer on two cores for 100 of
    them, which every other host's reports waited behind for as long as A kept it up. Must
    hold: past STATE_REPORT_RATE's burst A's state reports are dropped unread, counted and
    said in the allocator's log; B's report is read; and A's state report after the pause is
    judged (the allocation it says runs is running)."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    for n in range(40):
        await place(pool.store, a.host_id, f"a-{n}", spec())
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    subject = f"potluck.report.{a.host_id}.state"
    pulling = ActualState(as_of_position=0, containers=[], pulling=[f"a-{n}" for n in range(40)])
    for _ in range(100):
        await as_a.jetstream().publish(subject, pulling.model_dump_json().encode())
    mark = EngineStatus(available=True, detail="engine of B after A's states").model_dump_json().encode()
    await as_b.jetstream().publish(f"potluck.report.{b.host_id}.engine", mark)

    async def b_logged() -> bool:
        return any(e.get("detail") == "engine of B after A's states" for e in _allocator_log(pool))

    await _wait(b_logged, "B's engine report in the allocator's log", pool)
    said = [e for e in _allocator_log(pool) if e.get("event") == "allocator.host_state_reports_dropped"]
    assert said, "no drop said"
    assert said[0]["host_id"] == a.host_id, said

    await asyncio.sleep(1 / STATE_REPORT_RATE.per_s + 0.5)
    one_runs = ActualState(
        as_of_position=0,
        containers=[ContainerStatus(alloc_id="a-0", container_id="c-0", running=True)],
        pulling=[f"a-{n}" for n in range(1, 40)],
    )
    await as_a.jetstream().publish(subject, one_runs.model_dump_json().encode())

    async def running() -> bool:
        now = await allocation(pool.store, "a-0")
        return now is not None and now.status == "running"

    await _wait(running, "A's state report after the pause judged", pool)


async def test_a_host_reporting_finished_pulls_in_a_loop_logs_its_progress_at_the_throttles_pace(
    pool: Pool,
) -> None:
    """Tried: an allocation placed on host A; A reports its image's pull 50 times in a row, each
    time finished (done = total) at a new size. Before: progress is logged at most every
    PULL_PROGRESS_EVERY, but a finished pull once more at once; "finished" at each new size
    bypassed the throttle every time, so each report became an AllocationPullProgressed in
    the log. Must hold: a burst like it logs the first report (pulling), the first finish,
    and nothing more until the throttle's time has passed; A's start afterwards is taken."""
    a = await pool.enroll("laptop-a")
    as_a = await pool.client(a)
    alloc_id = "a-pulls"
    await place(pool.store, a.host_id, alloc_id, spec())
    subject = f"potluck.report.{a.host_id}.pulling"
    for n in range(1, 51):
        report = ContainerPulling(alloc_id=alloc_id, image=DEFAULT_TAG, done_bytes=n, total_bytes=n)
        await as_a.jetstream().publish(subject, report.model_dump_json().encode())
    started = ContainerStarted(alloc_id=alloc_id, container_id="c-a")
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.started", started.model_dump_json().encode())

    async def running() -> bool:
        now = await allocation(pool.store, alloc_id)
        return now is not None and now.status == "running"

    await _wait(running, "A's start taken", pool)
    types = [r.type for r in await pool.store.read_stream(alloc_stream(alloc_id))]
    assert types.count("AllocationPulling") == 1, types
    assert types.count("AllocationPullProgressed") <= 2, types


async def _raw_publish(
    nc: NATS, subject: str, payload: bytes, *, reply: bytes = b"", headers: bytes = b""
) -> None:
    """Publish as a client that writes NATS' protocol itself: the reply subject and the header
    block go out as the bytes given, which nats-py's own publish would never write."""
    target = subject.encode() + (b" " + reply if reply else b"")
    if headers:
        cmd = b"HPUB %s %d %d\r\n%s%s\r\n" % (
            target,
            len(headers),
            len(headers) + len(payload),
            headers,
            payload,
        )
    else:
        cmd = b"PUB %s %d\r\n%s\r\n" % (target, len(payload), payload)
    await nc._send_command(cmd)
    await nc.flush()


async def test_bytes_that_are_not_utf8_where_nats_py_decodes_leave_the_services_reading(pool: Pool) -> None:
    """Tried: host A, writing NATS' protocol itself, sends a heartbeat, a status request and a
    request for its desired state, each with a reply subject that is not UTF-8 (nats-server
    passes it through as written). Before: nats-py's read loop decoded it outside any handler,
    raised, and stopped: the registry read no one's heartbeat or request any more, the
    allocator no one's request (nor its consumers' messages), until the pings noticed minutes
    later. Must hold: afterwards host B's status and desired-state requests are answered,
    B's report is read, A's well-formed heartbeats still count (A stays active past the
    suspect time), and each service says it read an unreadable message."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    for host, nc in ((a, as_a), (b, as_b)):
        body = json.dumps(_registration(host.name, 1 << 30, 1 << 30)).encode()
        reply = Reply.model_validate_json(
            (await nc.request(f"{REGISTER}.{host.host_id}", body, timeout=10)).data
        )
        assert reply.ok, reply
    beats = asyncio.create_task(_beat(as_a, a.host_id))
    try:
        unreadable = inbox_prefix(a.host_id).encode() + b".\xff\xfe"
        beat = Heartbeat().model_dump_json().encode()
        await _raw_publish(as_a, host_subject(HEARTBEAT, a.host_id), beat, reply=unreadable)
        await _raw_publish(as_a, f"{STATUS}.{a.host_id}", b"{}", reply=unreadable)
        await _raw_publish(as_a, f"{DESIRED}.{a.host_id}", b"{}", reply=unreadable)
        await asyncio.sleep(0.5)
        status = await as_b.request(f"{STATUS}.{b.host_id}", b"{}", timeout=5)
        assert Reply.model_validate_json(status.data).ok, status.data
        desired = await as_b.request(f"{DESIRED}.{b.host_id}", b"{}", timeout=5)
        assert Reply.model_validate_json(desired.data).ok, desired.data
        mark = EngineStatus(available=True, detail="engine of B after A's bytes").model_dump_json().encode()
        await as_b.jetstream().publish(f"potluck.report.{b.host_id}.engine", mark)

        async def b_logged() -> bool:
            return any(e.get("detail") == "engine of B after A's bytes" for e in _allocator_log(pool))

        await _wait(b_logged, "B's engine report in the allocator's log", pool)
        await asyncio.sleep(3 * pool.liveness[0] * pool.liveness[1])  # past the suspect time
        assert (await pool.hosts()).hosts[a.host_id].status == "active", pool.logs()
    finally:
        beats.cancel()
    for service in ("registry", "allocator"):
        text = pool.processes[service].log_path.read_text(errors="replace")
        assert "bus.unreadable_message" in text, service


async def test_one_hosts_registrations_in_a_loop_leave_the_others_registering(pool: Pool) -> None:
    """Tried: host A, with its own credentials, sends 100,000 well-formed registrations naming
    its own inbox as fast as it can; then host B registers. Before: the registry took every
    request into its line of registrations unchecked and checked A's rate only once a place
    in it came up; B's registration stood behind tens of thousands of A's, waited past its
    sender's patience and was dropped unanswered (170,000 dropped of 200,000), as every other
    host's would be. Must hold: B's registration is answered ok; A's past its rate are
    refused (counted), and only few requests are ever dropped from the line."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    loop = 100_000
    body = json.dumps(_registration("laptop-a", 1 << 30, 1 << 30)).encode()
    for i in range(loop):
        await as_a.publish(f"{REGISTER}.{a.host_id}", body, reply=f"{inbox_prefix(a.host_id)}.loop.{i}")
    await as_a.flush()
    b_body = json.dumps(_registration("laptop-b", 1 << 30, 1 << 30)).encode()
    answer = await as_b.request(f"{REGISTER}.{b.host_id}", b_body, timeout=60)
    assert Reply.model_validate_json(answer.data).ok, answer.data
    refused = (await pool.live_hosts())["refused"]
    assert refused["requests_over_rate"].get(a.host_id, 0) >= loop // 2, refused
    assert b.host_id not in refused["requests_over_rate"], refused
    # Logged at the first drop and every hundredth after: a few lines are a few hundred dropped.
    registry_log = pool.processes["registry"].log_path.read_text(errors="replace")
    assert registry_log.count("registry.request_dropped") < 5, registry_log.count("registry.request_dropped")
