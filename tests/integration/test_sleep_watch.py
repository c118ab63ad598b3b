"""hostd's SleepWatch against a real registry on real NATS and Postgres, clocks injected.

A suspend cannot be caused in a test; two counters stand for CLOCK_BOOTTIME and
CLOCK_MONOTONIC. The watch asks the registry with the host's own reply inbox,
as hostd does, so the registry's gate and handler are the real ones.
"""

import asyncio
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import host_stream
from potluck.contracts.messages import RegisterHost, Reply
from potluck.contracts.subjects import LIST_HOSTS, inbox_prefix
from potluck.events import EventStore
from potluck.hostd.sleep_clock import SleepClock
from potluck.hostd.sleep_watch import SleepWatch
from potluck.localstack import NatsServer
from potluck.registry import host as aggregate
from potluck.registry.enrollment import enroll_host
from potluck.registry.liveness import LivenessPolicy
from potluck.registry.repository import decide_on_host
from potluck.registry.service import RegistryService
from tests.fixtures.servers import connect_client
from tests.helpers import stop

GIB = 1 << 30


class Clocks:
    """A machine's two clocks: `run` advances both, `suspend` only the boot-time one."""

    def __init__(self) -> None:
        self.boot, self.mono = 500.0, 400.0

    def run(self, seconds: float) -> None:
        self.boot += seconds
        self.mono += seconds

    def suspend(self, seconds: float) -> None:
        self.boot += seconds


@pytest.fixture
async def registry(store: EventStore, nc: NATS) -> AsyncIterator[RegistryService]:
    service = RegistryService(store, nc, LivenessPolicy(60.0, 3, 1000.0))
    task = asyncio.create_task(service.run())
    # Serving only once it answers: on a loaded machine its start (streams, catch-up,
    # subscriptions) outlasts announce()'s one-second try.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await nc.request(LIST_HOSTS, b"{}", timeout=0.5)
            break
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            assert asyncio.get_running_loop().time() < deadline, "the registry never answered"
            await asyncio.sleep(0.1)
    try:
        yield service
    finally:
        await stop(task)


async def registered_host(store: EventStore) -> str:
    host_id, _ = await enroll_host(store, "lid")
    request = RegisterHost(
        contract=CONTRACT_VERSION,
        donated=Capacity(cpus=2, memory_bytes=4 * GIB, disk_bytes=20 * GIB),
        engine=EngineFacts(
            version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
        ),
        hostd_version="test",
    )
    await decide_on_host(store, host_id, lambda s: aggregate.register(s, host_id, request))
    return host_id


async def host_records(store: EventStore, host_id: str) -> list[tuple[str, dict[str, object]]]:
    return [(r.type, r.data) for r in await store.read_stream(host_stream(host_id))]


async def watch_for(
    store: EventStore, nats_server: NatsServer, clocks: Clocks
) -> tuple[str, SleepWatch, NATS]:
    host_id = await registered_host(store)
    client = await connect_client(nats_server.url, inbox_prefix=inbox_prefix(host_id))

    async def request(subject: str, payload: bytes, timeout: float) -> Reply:
        return Reply.model_validate_json((await client.request(subject, payload, timeout=timeout)).data)

    clock = SleepClock(boottime=lambda: clocks.boot, monotonic=lambda: clocks.mono, threshold_s=2.0)
    return host_id, SleepWatch(host_id, request, clock, check_interval_s=0.05), client


async def test_a_suspend_seen_in_the_clocks_is_told_as_host_woke_and_triggers_a_resync(
    store: EventStore, nats_server: NatsServer, registry: RegistryService
) -> None:
    """The boot-time clock jumps 3600 s ahead of the monotonic one (a suspend nobody announced):
    the watch tells the registry, which records HostWoke(slept_s=3600); the watch then asks for
    a re-sync (on_woke); a second look finds nothing more to tell."""
    clocks = Clocks()
    host_id, watch, client = await watch_for(store, nats_server, clocks)
    resynced = asyncio.Event()
    watch.on_woke = resynced.set
    task = asyncio.create_task(watch.run())
    try:
        clocks.run(1)
        clocks.suspend(3600)
        async with asyncio.timeout(10):
            await resynced.wait()
        records = await host_records(store, host_id)
        assert records[-1] == ("HostWoke", {"host_id": host_id, "slept_s": 3600.0})
        clocks.run(5)
        await asyncio.sleep(0.3)  # several looks at the clocks
        assert [t for t, _ in await host_records(store, host_id)].count("HostWoke") == 1
        assert watch.awake.is_set()
    finally:
        await stop(task)
        await client.close()


async def test_an_announced_sleep_stops_beats_until_logind_says_it_is_back(
    store: EventStore, nats_server: NatsServer, registry: RegistryService
) -> None:
    """announce(): the registry records HostSleeping and the watch holds beats (awake cleared).
    The machine sleeps 600 s (the boot-time clock alone moves); logind_woke(): HostWoke with
    the time since the announcement, beats allowed again, and the clocks' own look that
    follows tells nothing twice."""
    clocks = Clocks()
    host_id, watch, client = await watch_for(store, nats_server, clocks)
    task = asyncio.create_task(watch.run())
    try:
        assert await watch.announce() is True
        assert not watch.awake.is_set()
        assert (await host_records(store, host_id))[-1][0] == "HostSleeping"
        clocks.suspend(600)
        await watch.logind_woke()
        assert watch.awake.is_set()
        await asyncio.sleep(0.3)  # the clock loop looks again
        types = [t for t, _ in await host_records(store, host_id)]
        assert types[-2:] == ["HostSleeping", "HostWoke"]
        assert (await host_records(store, host_id))[-1][1]["slept_s"] == 600.0
    finally:
        await stop(task)
        await client.close()
