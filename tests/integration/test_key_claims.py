"""A key a host claims is checked against the whole log, not a view a moment behind it (real
Postgres, real NATS with JetStream, the registry's HostRequests and JoinHandler's claims).

The registry's view folds each append a moment after it (its follower hears of it from
Postgres); here the follower starts late, as a busy machine delays it, so that what the check
sees is decided by the test, not by scheduling.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from potluck.contracts.host_events import HostRegistered, host_stream
from potluck.contracts.messages import ControlHost, RegisterHost
from potluck.events import EventStore, ensure_streams
from potluck.kernel.rejections import Rejected
from potluck.kernel.ssh_identity import load_or_create_key, public_key_line
from potluck.kernel.ssh_wire import public_key_blob
from potluck.localstack import NatsServer
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.claims import CLAIMS_LOCK_CLASS, TAKE_TURN, claim_name
from potluck.registry.enrollment import enroll_host
from potluck.registry.heartbeats import LivenessWatch
from potluck.registry.liveness import LivenessPolicy
from potluck.registry.projection import hosts_fold
from potluck.registry.repository import decide_on_host
from potluck.registry.requests import HostRequests
from tests.fixtures.registrations import registration
from tests.fixtures.servers import connect_client

#: How long the registry's follower is held back before it folds the log.
HELD_S = 0.3


def _registration(ssh_host_key: str) -> bytes:
    return json.dumps(registration(ssh_host_key=ssh_host_key)).encode()


@contextlib.asynccontextmanager
async def registry_requests(store: EventStore, nats_server: NatsServer) -> AsyncIterator[
    tuple[HostRequests, Callable[[], None]]
]:  # fmt: skip
    """The registry's HostRequests over a view whose follower starts when the second item is
    called (and stops when the block ends)."""
    nc = await connect_client(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    view = HostsView()
    fold = hosts_fold(view)
    requests = HostRequests(store, js, fold, view, LivenessWatch(store, view, LivenessPolicy()))
    following: list[asyncio.Task[None]] = []

    def follow() -> None:
        following.append(asyncio.create_task(fold.follow(store)))

    try:
        yield requests, follow
    finally:
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        await nc.close()


async def _registered_keys(store: EventStore, host_id: str) -> list[str]:
    records = await store.read_stream(host_stream(host_id))
    return [r.data["ssh_host_key"] for r in records if r.type == HostRegistered.type_name]


async def test_a_claim_right_behind_the_holders_registration_is_checked_against_it(
    store: EventStore, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Tried: machine B registers its SSH host key and deregisters, both in the log before the
    registry's view has folded them; member A then registers B's key (another comment), and the
    view folds the log 0.3 s later. Before: A's claim was checked against the view as it stood,
    found no holder, and was recorded (seen once in a full run: A's registration a few ms
    behind B's deregistration on a loaded machine). Must hold: A is refused SSH_KEY_TAKEN,
    nothing of A's is recorded, and B's own key again is accepted."""
    a, _ = await enroll_host(store, "laptop-a")
    b, _ = await enroll_host(store, "laptop-b")
    key = public_key_line(load_or_create_key(tmp_path / "b_host_key", comment="potluck-hostd-b"))
    kind, data = key.split()[:2]
    # What B's registry (this one a moment ago, or another replica) recorded.
    registration = RegisterHost.model_validate_json(_registration(key))
    await decide_on_host(store, b, lambda s: aggregate.register(s, b, registration))
    deregister = ControlHost(action="deregister")
    await decide_on_host(
        store, b, lambda s: aggregate.control(s, b, deregister, "member", now=datetime.now(UTC))
    )
    async with registry_requests(store, nats_server) as (requests, follow):
        claim = asyncio.ensure_future(requests.register(a, _registration(f"{kind} {data} laptop-a")))
        await asyncio.sleep(HELD_S)
        assert not claim.done(), "A's claim was decided before the view folded B's registration"
        follow()
        with pytest.raises(Rejected) as refused:
            async with asyncio.timeout(10):
                await claim
        assert refused.value.code == "SSH_KEY_TAKEN", refused.value
        assert await _registered_keys(store, a) == []
        assert (await requests.register(b, _registration(key)))["recorded"] == ["HostRegistered"]


async def test_two_claims_of_one_new_key_at_once_record_one(
    store: EventStore, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Tried: two enrolled machines register one SSH host key no one holds, at the same moment
    (a state_dir copied from one machine to another, both started together). Before: both
    checks ran before either append, so both were recorded. Must hold: exactly one is recorded
    and the other is refused SSH_KEY_TAKEN."""
    a, _ = await enroll_host(store, "laptop-a")
    b, _ = await enroll_host(store, "laptop-b")
    key = public_key_line(load_or_create_key(tmp_path / "copied_key", comment="potluck-hostd"))
    async with registry_requests(store, nats_server) as (requests, follow):
        follow()
        outcomes = await asyncio.gather(
            requests.register(a, _registration(key)),
            requests.register(b, _registration(key)),
            return_exceptions=True,
        )
    refusals = [o for o in outcomes if isinstance(o, Rejected)]
    assert [r.code for r in refusals] == ["SSH_KEY_TAKEN"], outcomes
    recorded = [await _registered_keys(store, host) for host in (a, b)]
    assert sorted(len(keys) for keys in recorded) == [0, 1], recorded


async def test_two_replicas_claiming_one_new_key_at_once_record_one(
    store: EventStore, database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Tried: two replicas of the registry (each its own pool of connections, its own view), and
    at the same moment one registration of a key no one holds on each, from two enrolled
    machines; five rounds, a new key each. Before: each replica's claims took turns only in their
    own process, so both checks found no holder and both registrations were recorded. Must hold:
    every round records exactly one and refuses the other SSH_KEY_TAKEN."""
    other = await EventStore.open(database_url, max_size=5, migrate=False)
    try:
        async with (
            registry_requests(store, nats_server) as (first, follow_first),
            registry_requests(other, nats_server) as (second, follow_second),
        ):
            follow_first()
            follow_second()
            for round_ in range(5):
                a, _ = await enroll_host(store, f"laptop-a{round_}")
                b, _ = await enroll_host(store, f"laptop-b{round_}")
                key = public_key_line(load_or_create_key(tmp_path / f"key{round_}", comment="copied"))
                async with asyncio.timeout(20):
                    outcomes = await asyncio.gather(
                        first.register(a, _registration(key)),
                        second.register(b, _registration(key)),
                        return_exceptions=True,
                    )
                refusals = [o for o in outcomes if isinstance(o, Rejected)]
                assert [r.code for r in refusals] == ["SSH_KEY_TAKEN"], (round_, outcomes)
                recorded = [await _registered_keys(store, host) for host in (a, b)]
                assert sorted(len(keys) for keys in recorded) == [0, 1], (round_, recorded)
    finally:
        await other.close()


async def test_a_claim_behind_another_replicas_held_turn_waits_then_is_refused_busy(
    store: EventStore, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Tried: another replica holds a key's turn (its advisory lock, in an open transaction)
    longer than a claim may wait (0.5 s here), and a registration of that key comes meanwhile;
    then the turn is let go and the registration sent again. Must hold: the first answer is
    BUSY 503 saying to try again, after at least the wait, with nothing recorded and the store's
    connections all back; the second is recorded."""
    a, _ = await enroll_host(store, "laptop-a")
    key = public_key_line(load_or_create_key(tmp_path / "key", comment="potluck-hostd"))
    name = claim_name("ssh_host_key", public_key_blob(key))
    async with registry_requests(store, nats_server) as (requests, follow):
        follow()
        requests.claims.catch_up_s = 0.5
        async with store.pool.acquire() as holder, holder.transaction():
            await holder.execute(TAKE_TURN, CLAIMS_LOCK_CLASS, name)
            started = asyncio.get_running_loop().time()
            with pytest.raises(Rejected) as refused:
                await requests.register(a, _registration(key))
            waited = asyncio.get_running_loop().time() - started
        assert (refused.value.code, refused.value.status) == ("BUSY", 503), refused.value
        assert "try again" in refused.value.message
        assert waited >= 0.5
        assert await _registered_keys(store, a) == []
        assert store.pool.get_idle_size() == store.pool.get_size()
        assert (await requests.register(a, _registration(key)))["recorded"] == ["HostRegistered"]
