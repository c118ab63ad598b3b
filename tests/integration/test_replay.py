"""Replay and time travel on a real log, against a real registry and allocator engine.

The scenario runs the services' own code in this process (the registry's
service on a real NATS server, the allocator's engine with its reactions,
reports decided by the allocator's lifecycle), so the live read models are
the ones the services keep. The checks go through NATS as an operator's
`replay --check` does, and through the real `potluck.ops.cli` process.
"""

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from nats.aio.client import Client as NATS

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.job_schemas import CreateJob
from potluck.allocator.lifecycle import decide
from potluck.allocator.live_state import state_responder
from potluck.allocator.schemas import CreateAllocation
from potluck.allocator.service import append_decisions, load_allocation
from potluck.allocator.users import User, add_user, token_hash
from potluck.contracts.allocation_events import Quota, UserTokenRotated, user_stream
from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import host_stream
from potluck.contracts.messages import ControlHost, RegisterHost, SleepNotice
from potluck.contracts.reports import ContainerExited, ContainerStarted
from potluck.contracts.subjects import ALLOCATOR_STATE
from potluck.events import DuplicateEvent, Event, EventStore, NewEvent
from potluck.localstack import NatsServer
from potluck.ops import OpsError
from potluck.ops.live import LiveModel, fetch_allocator, fetch_registry
from potluck.ops.replay import Until, check, differences, parse_until, replay_until
from potluck.projections import ReadModels
from potluck.readmodels.hosts import HostState
from potluck.registry import host as aggregate
from potluck.registry.enrollment import enroll_host
from potluck.registry.liveness import LivenessPolicy
from potluck.registry.repository import decide_on_host
from potluck.registry.service import RegistryService
from potluck.sshgateway.events import SessionEnded, SessionStarted, session_stream
from tests.fixtures.sample_events import ThingHappened
from tests.helpers import stop, wait_until

MIB = 1 << 20
GIB = 1 << 30
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


@dataclass
class Services:
    """The registry and the allocator engine at work on one log, answering on NATS."""

    store: EventStore
    nc: NATS
    registry: RegistryService
    engine: AllocatorEngine
    tasks: list["asyncio.Task[None]"] = field(default_factory=list)

    async def settled(self) -> int:
        """Until both services have folded the whole log; returns the head."""
        head = await self.store.head_position()
        await wait_until(
            lambda: self.registry.view.position >= head and self.engine.position >= head,
            15,
            f"the services to fold the log up to {head}",
        )
        return head

    async def live(self) -> list[LiveModel]:
        return [await fetch_registry(self.nc), await fetch_allocator(self.nc)]


@pytest.fixture
async def services(store: EventStore, nc: NATS) -> AsyncIterator[Services]:
    registry = RegistryService(store, nc, LivenessPolicy(60.0, 3, 1000.0))
    engine = AllocatorEngine(store)
    await engine.catch_up()
    await nc.subscribe(ALLOCATOR_STATE, cb=state_responder(engine))
    running = Services(store, nc, registry, engine)
    running.tasks = [
        asyncio.create_task(registry.run()),
        asyncio.create_task(engine.follow()),
        asyncio.create_task(engine.run_reactions(tick=0.1)),
    ]
    await wait_until(lambda: registry.view.position >= 0 and engine.ready.is_set(), 10, "start")
    try:
        yield running
    finally:
        await stop(*running.tasks)


async def register_host(
    store: EventStore, name: str, cpus: float, *, engine: EngineFacts = ENGINE, **labels: str
) -> str:
    host_id, _ = await enroll_host(store, name)
    request = RegisterHost(
        contract=CONTRACT_VERSION,
        donated=Capacity(cpus=cpus, memory_bytes=4 * GIB, disk_bytes=20 * GIB),
        labels={"name": name, **labels},
        engine=engine,
        hostd_version="test",
    )
    await decide_on_host(
        store, host_id, lambda s: aggregate.register(s, host_id, request), {"actor": f"host:{host_id}"}
    )
    return host_id


async def control(store: EventStore, host_id: str, action: str) -> None:
    command = ControlHost.model_validate({"action": action, "grace_s": 5})
    at = datetime.now(UTC)
    await decide_on_host(store, host_id, lambda s: aggregate.control(s, host_id, command, "operator", now=at))


async def add_a_user(engine: AllocatorEngine, name: str) -> User:
    events, _token = add_user(None, name, Quota())
    await engine.store.append(user_stream(name), events, expected_version=0)
    await engine.caught_up_with_log()
    return engine.users.users[name]


def one_task_job(**extra: Any) -> CreateJob:
    """A job of one task of `true` on one cpu of the test image; `extra` over its fields."""
    return CreateJob.model_validate(
        {
            "tasks": 1,
            "cpus": 1,
            "memory": "256M",
            "disk": "1G",
            "image": "potluck-test:1",
            "command": ["true"],
            **extra,
        }
    )


async def request(engine: AllocatorEngine, user: User, cpus: float, **extra: Any) -> str:
    body = CreateAllocation.model_validate(
        {"cpus": cpus, "memory": 256 * MIB, "disk": GIB, "image": "potluck-test:1", "lifetime": 3600, **extra}
    )
    state = (await engine.request_allocation(user, body)).state
    return state.alloc_id


async def report(store: EventStore, host_id: str, made: ContainerStarted | ContainerExited) -> None:
    decision = decide(await load_allocation(store, made.alloc_id), host_id, made)
    await append_decisions(store, [decision] if decision else [], made.report_id)


async def status_of(services: Services, alloc_id: str, status: str) -> None:
    await wait_until(
        lambda: services.engine.allocations.allocations[alloc_id].status == status,
        15,
        f"{alloc_id} to be {status}",
    )


@dataclass
class Scenario:
    hosts: list[str]
    allocations: list[str]
    middle: list[LiveModel]
    middle_time: datetime


async def scenario(services: Services) -> Scenario:
    """Several hosts and users, allocations through their lifecycle, a pause, a lost host, sessions."""
    store = services.store
    a = await register_host(store, "laptop-a", 4, arch="amd64")
    b = await register_host(store, "laptop-b", 2, arch="arm64")
    c = await register_host(store, "desktop-c", 8, arch="amd64")
    alice = await add_a_user(services.engine, "alice")
    bob = await add_a_user(services.engine, "bob")
    first = await request(services.engine, alice, 2, constraints={"arch": "arm64"})
    second = await request(services.engine, alice, 3)
    third = await request(services.engine, bob, 1)
    for alloc_id in (first, second, third):
        host_id = services.engine.allocations.allocations[alloc_id].host_id
        assert host_id is not None
        await report(store, host_id, ContainerStarted(alloc_id=alloc_id, container_id=f"c-{alloc_id}"))
        await status_of(services, alloc_id, "running")
    # Waits for capacity: 2 CPUs on arm64, where `first` holds them all.
    waiting = await request(services.engine, bob, 2, constraints={"arch": "arm64"})
    assert services.engine.allocations.allocations[waiting].status == "pending"
    session = f"s-{uuid4().hex[:8]}"
    started = datetime.now(UTC)
    await store.append(
        session_stream(session),
        [
            SessionStarted(
                session_id=session,
                alloc_id=first,
                user="alice",
                host_id=b,
                key_fingerprint="SHA256:abc",
                source_address="127.0.0.1",
                source_port=50022,
                gateway="gw-1",
                kind="shell",
                pty=True,
                term_type="xterm",
                started_at=started,
            )
        ],
        expected_version=0,
    )

    await services.settled()
    middle = await services.live()
    middle_time = datetime.now(UTC)
    await asyncio.sleep(0.05)

    # The second half: the moment above must not see any of it.
    await store.append(
        session_stream(session),
        [
            SessionEnded(
                session_id=session,
                alloc_id=first,
                reason="EXITED",
                exit_status=0,
                bytes_in=120,
                bytes_out=4096,
                started_at=started,
                ended_at=started + timedelta(seconds=30),
            )
        ],
        expected_version=1,
    )
    await services.engine.release(alice, first)  # frees arm64: `waiting` is placed by the reactions
    await status_of(services, waiting, "placed")
    await report(store, b, ContainerStarted(alloc_id=waiting, container_id=f"c-{waiting}"))
    await report(
        store, a, ContainerExited(alloc_id=third, container_id=f"c-{third}", exit_code=3, oom_killed=False)
    )
    await services.engine.extend(alice, second, 600)
    await control(store, c, "pause")
    # laptop-a goes silent, then is lost: the allocator gives up what ran there.
    for silent in (200.0, 2000.0):

        def silence(state: HostState | None, silent: float = silent) -> list[Event]:
            assert state is not None
            return aggregate.went_silent(state, silent, suspect_after_s=180, stranded_grace_s=1000)

        await decide_on_host(store, a, silence)
    await status_of(services, second, "lost")
    await store.append(
        user_stream("bob"), [UserTokenRotated(user="bob", token_sha256=token_hash("new"))], expected_version=1
    )
    # Events of a category no read model folds, and a rolled-back append (a hole in the positions).
    await store.append("thing-1", [ThingHappened(thing_id="t", count=1)])
    taken = (await store.read_stream(host_stream(b)))[0].event_id
    with pytest.raises(DuplicateEvent):
        await store.append("thing-1", [NewEvent(ThingHappened(thing_id="t", count=2), event_id=taken)])
    await control(store, b, "drain")
    await services.settled()
    return Scenario([a, b, c], [first, second, third, waiting], middle, middle_time)


def plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


async def ops(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The real `potluck.ops.cli` process, run without blocking the services in this loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "potluck.ops.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_replay_check_finds_no_difference_after_a_scenario(
    services: Services, database_url: str, nats_server: NatsServer
) -> None:
    done = await scenario(services)
    live = await services.live()
    result = await check(services.store, live)
    assert result.ok, [c.differences for c in result.comparisons]
    registry_side, allocator_side = result.comparisons
    assert registry_side.compared == {"hosts": 3}
    assert allocator_side.compared == {
        "hosts": 3,
        "capacity": 3,
        "allocations": 4,
        "users": 2,
        "jobs": 0,
    }
    assert result.models.position == await services.store.head_position()
    state = plain(result.models.to_dict())
    first, second, third, waiting = done.allocations
    assert {a: state["allocations"][a]["status"] for a in done.allocations} == {
        first: "released",
        second: "lost",
        third: "exited",
        waiting: "running",
    }
    assert [state["hosts"][h]["status"] for h in done.hosts] == ["lost", "draining", "paused"]
    assert state["capacity"][done.hosts[1]]["holdings"] == {
        waiting: {"cpus": 2.0, "memory_bytes": 256 * MIB, "disk_bytes": GIB}
    }
    assert state["capacity"][done.hosts[0]]["reserved"] == {"cpus": 0.0, "memory_bytes": 0, "disk_bytes": 0}
    assert "token_sha256" not in json.dumps(state["users"])
    [session] = state["sessions"].values()
    assert (session["state"], session["reason"], session["bytes_out"]) == ("ended", "EXITED", 4096)

    code, out, err = await ops(
        "replay", "--check", "--json", "--database-url", database_url, "--nats-url", nats_server.url
    )
    assert code == 0, out + err
    report_json = json.loads(out)
    assert report_json["ok"] is True
    assert [c["differences"] for c in report_json["comparisons"]] == [[], []]
    assert "replaying:" in err  # progress goes to stderr

    code, out, _ = await ops(
        "replay", "--check", "--database-url", database_url, "--nats-url", nats_server.url
    )
    assert code == 0
    assert "OK: the live read models equal the replay" in out


async def test_until_a_middle_position_or_time_reproduces_that_moment(
    services: Services, database_url: str
) -> None:
    done = await scenario(services)
    registry_then, allocator_then = done.middle
    assert registry_then.position == allocator_then.position
    middle = registry_then.position
    assert middle < await services.store.head_position()

    at_position = await replay_until(services.store, Until(position=middle))
    assert at_position.position == middle
    replayed = plain(at_position.to_dict())
    assert differences({"hosts": replayed["hosts"]}, registry_then.models) == []
    assert differences({k: replayed[k] for k in allocator_then.models}, allocator_then.models) == []
    assert [s["state"] for s in replayed["sessions"].values()] == ["open"]

    at_time = await replay_until(services.store, Until(time=done.middle_time))
    assert at_time.position == middle
    assert plain(at_time.to_dict()) == replayed

    code, out, err = await ops("replay", "--until", str(middle), "--json", "--database-url", database_url)
    assert code == 0, err
    view = json.loads(out)
    assert view["position"] == middle
    then = allocator_then.models
    assert {h["host_id"]: h["status"] for h in view["hosts"]} == {
        h: row["status"] for h, row in registry_then.models["hosts"].items()
    }
    assert {a["alloc_id"]: a["status"] for a in view["allocations"]} == {
        a: row["status"] for a, row in then["allocations"].items()
    }
    assert {h["host_id"]: h["reserved"] for h in view["hosts"]} == {
        h: row["reserved"] for h, row in then["capacity"].items()
    }

    code, out, _ = await ops(
        "replay", "--until", done.middle_time.isoformat(), "--database-url", database_url, "--quiet"
    )
    assert code == 0
    assert f"log position {middle}" in out
    for alloc_id, row in then["allocations"].items():
        if row["status"] in ("placed", "running", "pending"):
            assert alloc_id in out
    assert "Hosts" in out


async def test_a_live_model_that_drifted_is_reported_with_each_difference(
    services: Services, database_url: str, nats_server: NatsServer
) -> None:
    done = await scenario(services)
    waiting = done.allocations[3]
    engine = services.engine
    engine.allocations.allocations[waiting] = replace(
        engine.allocations.allocations[waiting], status="exited"
    )
    del engine.users.users["bob"]

    result = await check(services.store, await services.live())
    assert not result.ok
    registry_side, allocator_side = result.comparisons
    assert registry_side.differences == []
    assert f'allocations.{waiting}.status: replay "running", live "exited"' in allocator_side.differences
    assert any(line.startswith("users.bob: only in the replay") for line in allocator_side.differences)

    code, out, _ = await ops(
        "replay", "--check", "--database-url", database_url, "--nats-url", nats_server.url
    )
    assert code == 1
    assert f"allocations.{waiting}.status" in out
    assert "DIFFERENT" in out


async def test_the_fold_is_deterministic_whatever_the_batches(services: Services) -> None:
    await scenario(services)
    calls: list[tuple[int, int, int]] = []
    one_by_one = await ReadModels.rebuild(services.store, progress=lambda *c: calls.append(c), batch_size=1)
    at_once = await ReadModels.rebuild(services.store, batch_size=100_000)
    assert plain(one_by_one.to_dict()) == plain(at_once.to_dict())
    assert one_by_one.position == at_once.position == await services.store.head_position()
    positions = [position for _, position, _ in calls]
    assert positions == sorted(positions)
    assert calls[-1][1] == calls[-1][2]
    # Folding the same events again changes nothing.
    for record in await services.store.read_all(0, 100_000):
        one_by_one.apply(record)
    assert plain(one_by_one.to_dict()) == plain(at_once.to_dict())


async def test_moments_the_log_has_not_reached_are_refused(store: EventStore) -> None:
    await register_host(store, "laptop-a", 2)
    head = await store.head_position()
    with pytest.raises(OpsError, match="past the end of the log"):
        await replay_until(store, Until(position=head + 1))
    with pytest.raises(OpsError, match="in the future"):
        await replay_until(store, Until(time=datetime.now(UTC) + timedelta(hours=1)))
    before = await replay_until(store, Until(time=datetime(2000, 1, 1, tzinfo=UTC)))
    assert (before.position, before.to_dict()["hosts"]) == (0, {})
    assert parse_until("42") == Until(position=42, text="42")
    assert parse_until("2025-11-28T10:00:00").time == datetime(2025, 11, 28, 10, tzinfo=UTC)
    assert parse_until("2025-11-28T10:00:00+01:00").time == datetime(2025, 11, 28, 9, tzinfo=UTC)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_until("15m ago", now=now).time == now - timedelta(minutes=15)
    for bad in ("yesterday", "-3", "2025-13-45", "x ago", "12:00 tomorrow"):
        with pytest.raises(OpsError, match="--until"):
            parse_until(bad)


async def test_replay_reproduces_asleep_woke_unreachable_and_lost(services: Services) -> None:
    """Four hosts through sleep and silence, decided by the registry's aggregate as its
    handlers do: one announced sleep (asleep), one slept and woke (active, slept 120 s),
    one unreachable, one asleep then lost past the stranded grace. `replay --check` finds
    no difference with the running registry and allocator, liveness_since and slept_s
    included, and the replay has each state."""
    store = services.store
    asleep, woke, unreachable, lost = [await register_host(store, f"lid-{i}", 2) for i in range(4)]

    async def notice(host_id: str, slept_s: float | None) -> None:
        note = SleepNotice(slept_s=slept_s)
        await decide_on_host(store, host_id, lambda s: aggregate.sleep_noticed(s, host_id, note))

    async def silent(host_id: str, seconds: float) -> None:
        def decide(state: HostState | None) -> list[Event]:
            assert state is not None
            return aggregate.went_silent(state, seconds, suspect_after_s=180, stranded_grace_s=1000)

        await decide_on_host(store, host_id, decide)

    await notice(asleep, None)
    await notice(woke, None)
    await notice(woke, 120.0)
    await silent(unreachable, 200.0)
    await notice(lost, None)
    await silent(lost, 200.0)  # asleep: not suspected
    await silent(lost, 2000.0)
    await services.settled()

    result = await check(store, await services.live())
    assert result.ok, [c.differences for c in result.comparisons]
    hosts = plain(result.models.to_dict())["hosts"]
    assert [hosts[h]["status"] for h in (asleep, woke, unreachable, lost)] == [
        "asleep",
        "active",
        "unreachable",
        "lost",
    ]
    assert hosts[woke]["slept_s"] == 120.0
    assert all(hosts[h]["liveness_since"] for h in (asleep, woke, unreachable, lost))
