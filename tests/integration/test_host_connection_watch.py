"""The registry's watch on each host key's NATS connections (services/registry/connection_watch.py),
against a real nats-server with the configuration Potluck generates (nkeys, monitoring on
loopback) and a real Postgres log.

nats-server bounds connections per account and every client shares one: without the watch one
host's key held as many connections as it opened."""

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from potluck.contracts.subjects import inbox_prefix
from potluck.events import EventStore
from potluck.events.connection import IdentityRefused, connect_bus
from potluck.hostd import member
from potluck.hostd.config import HostdConfig
from potluck.hostd.shut_out import ShutOut
from potluck.localstack import free_port
from potluck.localstack.nats_server import NatsServer
from potluck.registry.connection_caps import CapPolicy
from potluck.registry.connection_watch import ConnectionWatch
from potluck.registry.enrollment import current_hosts, enroll_host
from potluck.registry.nats_auth import new_user_key, public_key_of
from potluck.registry.users_file import NatsAuthFiles, UsersFileKeeper
from tests.fixtures.servers import SERVICE_SEED, connect_client

COOLDOWN = timedelta(seconds=3)


async def _open(server: NatsServer, seed: str, host_id: str, count: int) -> list[NATS]:
    async def quiet(exc: Exception) -> None:
        pass

    return [
        await connect_client(
            server.url,
            nkeys_seed_str=seed,
            inbox_prefix=inbox_prefix(host_id),
            allow_reconnect=False,
            error_cb=quiet,
        )
        for _ in range(count)
    ]


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_key_past_the_limit_is_shut_out_for_the_cooldown_and_an_excused_client_comes_back(
    store: EventStore, guarded_nats: NatsServer, tmp_path: Path
) -> None:
    """Tried: host A's key holds 12 connections (limit 3), host B's one, the services' 20; the
    watch looks once. One more client of A's is connect_bus with its refusals excused while
    capped (as hostd's are), another without.
    Must hold: only A is capped (the services and B never), the users file lacks A's key until
    the cap ends, every connection of A's is closed while B's and the services' stay; the
    unexcused client takes the refusals as final and the excused one does not, and reconnects
    once the keeper has put A's key back at the cap's end."""
    seed_file = tmp_path / "services.seed"
    seed_file.write_text(SERVICE_SEED + "\n")
    a_id, a_key = await enroll_host(store, "laptop-a")
    b_id, b_key = await enroll_host(store, "laptop-b")
    auth = NatsAuthFiles(guarded_nats.auth_file, guarded_nats.pid_file, seed_file)
    view = await current_hosts(store)
    keeper = UsersFileKeeper(store, view, auth, recheck_s=0.5)
    assert await keeper.render_at_start()
    await asyncio.sleep(0.5)  # nats-server reloads on SIGHUP

    services = [await connect_client(guarded_nats.url, nkeys_seed_str=SERVICE_SEED) for _ in range(20)]
    b_conns = await _open(guarded_nats, b_key.seed, b_id, 1)
    a_conns = await _open(guarded_nats, a_key.seed, a_id, 12)
    shut_out = asyncio.Event()
    refused: list[str] = []

    async def final(which: str) -> None:
        refused.append(which)

    excused = await connect_bus(
        guarded_nats.url,
        name="excused",
        seed=a_key.seed,
        inbox_prefix=inbox_prefix(a_id),
        refused_after=4,
        on_refused=lambda: final("excused"),
        excused=lambda: "capped" if shut_out.is_set() else None,
    )
    unexcused = await connect_bus(
        guarded_nats.url,
        name="unexcused",
        seed=a_key.seed,
        inbox_prefix=inbox_prefix(a_id),
        refused_after=4,
        on_refused=lambda: final("unexcused"),
    )

    watch = ConnectionWatch(
        store,
        lambda: current_hosts(store),
        keeper,
        guarded_nats.monitor_urls,
        [public_key_of(SERVICE_SEED)],
        policy=CapPolicy(limit=3, cooldown=COOLDOWN, longest=COOLDOWN),
        notice_s=0,
    )
    keeper.fresh_view = lambda: current_hosts(store)
    shut_out.set()  # what hostd learns from HostConnectionsCapped before its connection closes
    keeping = asyncio.create_task(keeper.run())
    try:
        caps = await watch.look()
        assert [(c.host_id, c.connections) for c in caps] == [(a_id, 14)]
        text = guarded_nats.auth_file.read_text()
        assert a_key.public not in text
        assert b_key.public in text
        assert public_key_of(SERVICE_SEED) in text
        await _until(lambda: not any(c.is_connected for c in a_conns), "A's connections closed")
        await _until(lambda: "unexcused" in refused, "the unexcused client to give up")
        assert all(c.is_connected for c in services + b_conns)
        assert not excused.is_connected
        # A second look while the cap runs records nothing more.
        assert await watch.look() == []

        await _until(lambda: a_key.public in guarded_nats.auth_file.read_text(), "A's key back", timeout=30)
        shut_out.clear()
        await _until(lambda: excused.is_connected, "the excused client reconnected", timeout=30)
        assert refused == ["unexcused"]
        assert (await current_hosts(store)).hosts[b_id].capped_until is None
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        for c in [*services, *b_conns, *a_conns, excused, unexcused]:
            with contextlib.suppress(Exception):
                await c.close()


async def test_a_members_command_during_a_cap_says_the_key_is_capped_not_revoked(
    guarded_nats: NatsServer, tmp_path: Path
) -> None:
    """Tried: `potluck host status`'s request (hostd.member.status) with a key the server
    refuses, once with hostd's note of a running cap in the state directory, once without.
    Must hold: with the note the error says the key is shut out for its connections and until
    when; without it, the refusal reads as before (revoked?)."""
    key = new_user_key()
    credentials = tmp_path / "host.creds"
    credentials.write_text(f'host_id = "h-0123456789ab"\nnats_seed = "{key.seed}"\n')
    config = HostdConfig.model_validate(
        {
            "host_id": "h-0123456789ab",
            "credentials_file": str(credentials),
            "nats_url": guarded_nats.url,
            "state_dir": str(tmp_path / "state"),
            "donate": {"cpus": 1, "memory": "1G", "disk": "1G"},
        }
    )
    with pytest.raises(IdentityRefused, match=r"revoked\?"):
        await member.status(config)
    ShutOut(config.state_dir).noticed(60.0, "its NATS key held 200 connections: shut out until T")
    with pytest.raises(IdentityRefused, match="200 connections: shut out until T; this machine's commands"):
        await member.status(config)


async def test_a_node_whose_monitoring_cannot_be_read_decides_nothing(
    store: EventStore, guarded_nats: NatsServer, tmp_path: Path
) -> None:
    """Tried: a host's key holding 6 connections (limit 3) on the one node that answers, and a
    second monitoring URL where nothing listens.
    Must hold: the look fails saying so and records nothing, the key stays in the users file:
    no decision on a partial count."""
    seed_file = tmp_path / "services.seed"
    seed_file.write_text(SERVICE_SEED + "\n")
    a_id, a_key = await enroll_host(store, "laptop-a")
    auth = NatsAuthFiles(guarded_nats.auth_file, guarded_nats.pid_file, seed_file)
    keeper = UsersFileKeeper(store, await current_hosts(store), auth)
    assert await keeper.render_at_start()
    await asyncio.sleep(0.5)
    conns = await _open(guarded_nats, a_key.seed, a_id, 6)
    try:
        watch = ConnectionWatch(
            store,
            lambda: current_hosts(store),
            keeper,
            [*guarded_nats.monitor_urls, f"http://127.0.0.1:{free_port()}"],
            [public_key_of(SERVICE_SEED)],
            policy=CapPolicy(limit=3, cooldown=COOLDOWN, longest=COOLDOWN),
            notice_s=0,
        )
        with pytest.raises(OSError, match="refused"):
            await watch.look()
        assert (await current_hosts(store)).hosts[a_id].capped_until is None
        assert a_key.public in guarded_nats.auth_file.read_text()
        assert all(c.is_connected for c in conns)
    finally:
        for c in conns:
            await c.close()
