"""Two of each central service on one log, one of them killed (-9) mid-work: nothing lost or doubled.

The allocator's replicas are tested in test_allocator_concurrency.py; here the registry, the SSH
gateway and the outbox relay (embedded in the registry and the allocator) get the same treatment.
"""

import asyncio
import collections
import subprocess
from pathlib import Path
from uuid import UUID

import aiohttp
import pytest

from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import HostEnrolled, host_stream
from potluck.events import EVENTS_STREAM, RecordedEvent, event_subscriber
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.docker_engine import DockerEngine
from potluck.registry import host as aggregate
from potluck.registry.nats_auth import new_user_key
from potluck.registry.repository import Decision, decide_on_host
from potluck.sshgateway.events import session_stream
from tests.e2e.conftest import Gatewayed, replay_agrees
from tests.fixtures.pool import EnrolledHost, Pool
from tests.fixtures.sample_events import ThingHappened, sample
from tests.helpers import Received, host_registered, stop, wait_until

#: Suspect after 1.5 s of silence, lost after 3 s: short enough for a lean test, long enough that
#: a hostd merely waiting for one of two loaded cores is not suspected.
LIVENESS = (0.3, 5, 3.0)

#: Hosts registered in the log whose hostd never runs, raced over by two deciders each.
GHOSTS = 10


async def host_events(pool: Pool, host_id: str) -> list[str]:
    return [r.type for r in await pool.store.read_stream(host_stream(host_id))]


async def ghost_host(pool: Pool, host_id: str) -> None:
    """A host registered in the log whose hostd never runs: silent from the start."""
    facts = EngineFacts(
        version="test", cgroup_version="1", storage_driver="overlay2", disk_quota_supported=False
    )
    await pool.store.append(
        host_stream(host_id),
        [
            # A real key: the NATS users file is rendered from every enrolled host's.
            HostEnrolled(host_id=host_id, name=host_id, nkey=new_user_key().public),
            host_registered(
                host_id=host_id,
                donated=Capacity(cpus=1.0, memory_bytes=1 << 30, disk_bytes=1 << 30),
                engine=facts,
                hostd_version="test",
            ),
        ],
        expected_version=0,
    )


def silent_for(seconds: float) -> Decision:
    """What each registry's liveness watch decides for a host silent that long."""
    suspect_after, grace = LIVENESS[0] * LIVENESS[1], LIVENESS[2]
    return lambda state: (
        aggregate.went_silent(state, seconds, suspect_after_s=suspect_after, stranded_grace_s=grace)
        if state
        else []
    )


async def online(pool: Pool, name: str, engine: DockerEngine) -> EnrolledHost:
    host = await pool.enroll(name)
    pool.write_config(host, engine)
    pool.start_hostd(host)
    return host


@pytest.mark.liveness(*LIVENESS)
async def test_two_registries_decide_each_transition_once_and_one_survives_a_kill(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: two registries watch two heartbeating hosts; one host's hostd is killed (-9) until it
    is lost; then one registry is killed (-9) while the beats go on; the lost host's hostd starts
    again. Must hold: each transition (suspected, lost, recovered) is in the host's stream once,
    though both registries saw the silence; the live host is never suspected, before or after the
    kill; the surviving registry answers the returning host's (changed) registration. Also, for a
    race that does not hang on two processes' timing: two deciders (what each registry runs) per
    silent host, all at once; each host gets one HostSuspected."""
    pool.start_registry("registry-2")
    ghosts = [f"h-ghost-{n}" for n in range(GHOSTS)]
    for ghost in ghosts:
        await ghost_host(pool, ghost)
    # Two deciders per ghost, all at once: which reads land before which appends is the
    # database's timing, and over this many pairs some pair reads the same version.
    await asyncio.gather(*(decide_on_host(pool.store, g, silent_for(2.0)) for g in ghosts for _ in range(2)))
    for ghost in ghosts:
        assert (await host_events(pool, ghost)).count("HostSuspected") == 1, ghost
    steady = await online(pool, "steady", docker_engines[0])
    flaky = await online(pool, "flaky", docker_engines[1])
    for host in (steady, flaky):
        await pool.wait_for_host(host.host_id, "active")

    assert flaky.process is not None
    flaky.process.kill()
    await pool.wait_for_host(flaky.host_id, "lost", timeout=30)
    # Both registries measured the silence; a second decision would land within a look (≤ 1 s).
    await asyncio.sleep(1.5)
    silent = await host_events(pool, flaky.host_id)
    assert (silent.count("HostSuspected"), silent.count("HostLost")) == (1, 1), silent
    for ghost in ghosts:  # lost by the registries meanwhile
        events = await host_events(pool, ghost)
        assert (events.count("HostSuspected"), events.count("HostLost")) == (1, 1), (ghost, events)

    pool.processes["registry"].kill()
    # Beats go on to the survivor alone; three suspect windows pass without the steady host
    # being suspected (a registry that stopped counting its beats would suspect it in one).
    await asyncio.sleep(3 * LIVENESS[0] * LIVENESS[1])
    assert (await pool.hosts()).hosts[steady.host_id].status == "active"
    assert "HostSuspected" not in await host_events(pool, steady.host_id)

    # It registers again, donating less: a changed registration is a new HostRegistered, and only
    # the surviving registry can answer it.
    pool.write_config(flaky, docker_engines[1], donate={"cpus": 1, "memory": "2G", "disk": "4G"})
    pool.start_hostd(flaky)
    await pool.wait_for_host(flaky.host_id, "active", timeout=60)
    back = await host_events(pool, flaky.host_id)
    donated = (await pool.hosts()).hosts[flaky.host_id].donated
    assert donated is not None
    assert donated.cpus == 1, pool.logs()
    assert back.count("HostRecovered") <= 1, back
    assert (back.count("HostSuspected"), back.count("HostLost")) == (1, 1), back
    assert back.count("HostRegistered") == 2, back


async def two_gateways(pool: Pool, engine: DockerEngine, tmp_path: Path) -> tuple[Gatewayed, Gatewayed]:
    """Two gateways with the pool's one set of keys, a hostd linked to both, a user: a
    Gatewayed for each gateway's SSH port."""
    client_key = pool.gateway_client_key()
    ports = [(free_port(), free_port()) for _ in range(2)]
    for n, (ssh_port, tunnel_port) in enumerate(ports):
        pool.start_gateway(
            listen=f"127.0.0.1:{ssh_port}",
            tunnel_listen=f"127.0.0.1:{tunnel_port}",
            name="sshgateway" if n == 0 else f"sshgateway-{n + 1}",
        )
    host = await pool.enroll("laptop-a")
    links = [{"address": f"127.0.0.1:{tunnel}", "client_key": client_key} for _, tunnel in ports]
    pool.write_config(host, engine, gateways=links)
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    await pool.wait_for_images(host.host_id)
    for ssh_port, _ in ports:
        await asyncio.to_thread(wait_for_port, ssh_port, what="an SSH gateway", timeout=30)
    await pool.wait_api()
    key = tmp_path / "id_alice"
    await asyncio.to_thread(
        subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    token = await pool.add_user("alice")
    first, second = (Gatewayed(pool, host, ssh_port, key, token) for ssh_port, _ in ports)
    return first, second


async def session_events(pool: Pool, alloc_id: str) -> dict[str, collections.Counter[str]]:
    """Per event type, how many times each session of the allocation has it in the log."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for record in await pool.store.read_all(0, limit=100_000):
        if record.type.startswith("Session") and record.data.get("alloc_id") == alloc_id:
            counts[record.type][record.data["session_id"]] += 1
    return counts


async def session_records(pool: Pool, session_id: str) -> list[RecordedEvent]:
    return list(await pool.store.read_stream(session_stream(session_id)))


async def started_session(pool: Pool, alloc_id: str, command: str, timeout: float = 30) -> RecordedEvent:
    """The SessionStarted of the allocation's session running `command`, once it is in the log."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for record in await pool.store.read_all(0, limit=100_000):
            data = record.data
            if record.type == "SessionStarted" and (data["alloc_id"], data["command"]) == (alloc_id, command):
                return record
        assert asyncio.get_running_loop().time() < deadline, pool.logs()
        await asyncio.sleep(0.1)


async def echoes(session: asyncio.subprocess.Process, line: bytes) -> bytes:
    """What a `cat` session sends back for `line`."""
    assert session.stdin is not None
    assert session.stdout is not None
    session.stdin.write(line)
    await session.stdin.drain()
    async with asyncio.timeout(30):
        return await session.stdout.readline()


#: The gateways refresh their runs' entries every 0.5 s and take a run silent for 4 s for lost.
LOST_GATEWAY_TIMING = {
    "POTLUCK_SSHGATEWAY_RUN_REFRESH_S": "0.5",
    "POTLUCK_SSHGATEWAY_RUN_LOST_AFTER_S": "4",
    "POTLUCK_SSHGATEWAY_LOST_SWEEP_S": "0.5",
}


async def test_a_session_through_either_gateway_and_through_the_survivor_of_a_kill(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: one user session through each of two gateways (one hostd linked to both); a `cat`
    session through the second, held open; a long one through the first, which is killed (-9)
    while it runs; then a new session through the second. Must hold: every session that ran to
    its end gave its exit status; the killed gateway's session ends at the client; the new one
    works; within seconds the survivor records the killed gateway's session as ended, once,
    GATEWAY_LOST, naming the killed run; the held session through the survivor is untouched
    (it still echoes, and ends EXITED when its input ends); the audit has every session's
    SessionStarted and SessionEnded once; and `potluck ops replay --check` still agrees."""
    for name, value in LOST_GATEWAY_TIMING.items():
        monkeypatch.setenv(name, value)
    first, second = await two_gateways(pool, docker_engines[0], tmp_path)
    async with aiohttp.ClientSession() as http:
        alloc_id = await first.allocate(http)

    one = await first.ssh(alloc_id, "echo one")
    two = await second.ssh(alloc_id, "echo two")
    assert (one.returncode, one.stdout, two.returncode, two.stdout) == (0, "one\n", 0, "two\n"), (
        one.stderr + two.stderr + pool.logs()
    )

    held = await second.ssh_process(alloc_id, "cat")
    assert await echoes(held, b"ping\n") == b"ping\n", pool.logs()
    survivor_run = (await started_session(pool, alloc_id, "cat")).data["gateway_run"]
    long = asyncio.create_task(first.ssh(alloc_id, "echo started; sleep 60"))
    lost = await started_session(pool, alloc_id, "echo started; sleep 60")
    killed_run = lost.data["gateway_run"]
    assert None not in (survivor_run, killed_run)
    assert survivor_run != killed_run

    pool.processes["sshgateway"].kill()
    async with asyncio.timeout(30):
        cut = await long
    assert cut.returncode != 0, cut.stdout

    three = await second.ssh(alloc_id, "echo three")
    assert (three.returncode, three.stdout) == (0, "three\n"), three.stderr + pool.logs()

    # Entry silent for 4 s, sweeps every 0.5 s: recorded within seconds of the kill.
    lost_id = lost.data["session_id"]
    deadline = asyncio.get_running_loop().time() + 30
    while len(records := await session_records(pool, lost_id)) < 2:
        assert asyncio.get_running_loop().time() < deadline, pool.logs()
        await asyncio.sleep(0.2)
    end = records[1]
    assert (end.type, end.data["reason"]) == ("SessionEnded", "GATEWAY_LOST"), end.data
    assert f"run {killed_run} stopped without ending the session" in end.data["detail"]
    assert end.metadata["recorded_by"].endswith(f"run {survivor_run}"), end.metadata
    assert (end.data["bytes_in"], end.data["bytes_out"]) == (0, 0)

    held_id = (await started_session(pool, alloc_id, "cat")).data["session_id"]
    assert len(await session_records(pool, held_id)) == 1
    assert await echoes(held, b"pong\n") == b"pong\n", pool.logs()
    assert held.stdin is not None
    held.stdin.close()
    async with asyncio.timeout(30):
        assert await held.wait() == 0, pool.logs()

    # The survivor writes a session's end just after the client sees it: wait for the last one.
    deadline = asyncio.get_running_loop().time() + 30
    while len((counts := await session_events(pool, alloc_id))["SessionEnded"]) < 5:
        assert asyncio.get_running_loop().time() < deadline, (counts, pool.logs())
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)  # a second GATEWAY_LOST from a racing sweep would land by now
    counts = await session_events(pool, alloc_id)
    started, ended = counts["SessionStarted"], counts["SessionEnded"]
    assert sorted(started.values()) == [1] * 5, counts
    assert sorted(ended.values()) == [1] * 5, counts
    assert set(ended) == set(started), counts
    held_end = (await session_records(pool, held_id))[1]
    assert (held_end.data["reason"], held_end.data["exit_status"]) == ("EXITED", 0), held_end.data
    await replay_agrees(pool)


def leading_relay(pool: Pool) -> str:
    """Which of the pool's processes leads the relay, as its log says (one has said so)."""
    leaders = [name for name, proc in pool.processes.items() if "relay.leading" in proc.log_tail(100_000)]
    assert len(leaders) == 1, (leaders, pool.logs())
    return leaders[0]


async def test_events_appended_while_the_leading_relay_is_killed_all_reach_consumers_once(
    pool: Pool,
) -> None:
    """Tried: the pool's registry and allocator each run the relay (one leads); events are
    appended in small batches while the leader is killed (-9) mid-way; the other takes over.
    Must hold: a durable consumer (the subscriber every projection on the bus uses) applies every
    appended event exactly once, in log order, and the bus's stream holds each event once."""
    nc = await pool.client()
    received = Received()
    consumer = event_subscriber(
        nc, durable="replica-test", subjects=["potluck.evt.thing.>"], handle=received, events=sample
    )
    consuming = asyncio.create_task(consumer.run())
    appended: list[UUID] = []
    try:
        first = await pool.store.append("thing-0", [ThingHappened(thing_id="t", count=0)])
        appended += [r.event_id for r in first]
        await wait_until(lambda: len(received.counts) == 1, 30, "the first event at the consumer")
        leader = leading_relay(pool)

        async def append_batches(start: int, batches: int) -> None:
            for batch in range(start, start + batches):
                records = await pool.store.append(
                    f"thing-{batch}", [ThingHappened(thing_id="t", count=i) for i in range(20)]
                )
                appended.extend(r.event_id for r in records)
                await asyncio.sleep(0.02)

        appending = asyncio.create_task(append_batches(1, 100))
        await wait_until(lambda: len(received.counts) > 200, 30, "the relay to be mid-way")
        assert not appending.done(), "the kill must land while events are being appended"
        pool.processes[leader].kill()
        await appending
        await append_batches(101, 10)  # after the kill: the new leader relays these too
        await wait_until(lambda: len(received.counts) >= len(appended), 60, "every event at the consumer")
        await asyncio.sleep(0.5)  # give any duplicate a chance to arrive
        info = await nc.jetstream().stream_info(EVENTS_STREAM, subjects_filter="potluck.evt.thing.>")
    finally:
        await stop(consuming)
        await nc.close()
    assert set(received.counts) == set(appended)
    assert max(received.counts.values()) == 1, received.counts.most_common(3)
    assert received.positions == sorted(received.positions)
    thing_messages = sum((info.state.subjects or {}).values())
    assert thing_messages == len(appended), (thing_messages, len(appended))
