"""A member's join is answered even when the NATS users file is rendered again in between
(real Postgres, real nats-server with nkeys, the registry's JoinHandler).

The registry records HostJoined, renders the users file with the member's new key, lets
nats-server reload, then answers on the token's throwaway identity. Anything else that renders
the file meanwhile (another member's join, an operator enrolling a machine, another registry
replica) used to render it from a log that says the token is spent, without the throwaway key:
nats-server then closed the member's connection, the answer was lost, and the member was told
to ask for a new token although the registry had admitted its key.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from potluck.contracts.host_events import HostJoined, host_stream
from potluck.contracts.join_token import JoinToken, encode
from potluck.contracts.messages import JoinRequest, Reply
from potluck.contracts.subjects import JOIN, host_subject
from potluck.events import EventStore
from potluck.events.connection import connect_bus
from potluck.kernel.rejections import Rejected
from potluck.localstack import NatsServer
from potluck.localstack.docker_engine import DockerEngine
from potluck.member.join import (
    AnswerLost,
    JoinSettings,
    admitted,
    connects,
    join,
    new_key_pair,
    redeem,
    redeem_or_find_admitted,
    unfinished_join_seed,
)
from potluck.readmodels.hosts import HostsView
from potluck.registry.admitted_keys import JOIN_ANSWER_WINDOW
from potluck.registry.claims import Claims
from potluck.registry.enrollment import current_hosts, enroll_with_token, refresh_nats_authorization
from potluck.registry.joining import JoinHandler
from potluck.registry.projection import hosts_fold
from potluck.registry.users_file import NatsAuthFiles, UsersFileKeeper
from tests.fixtures.servers import SERVICE_SEED


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "services.seed"
    path.write_text(SERVICE_SEED + "\n")
    return path


async def render(store: EventStore, server: NatsServer) -> None:
    """What any other renderer of the users file does (potluck ops hosts enroll, another join)."""
    await refresh_nats_authorization(store, server.auth_file, [SERVICE_SEED], server.pid_file)


@pytest.fixture
async def followed(store: EventStore) -> AsyncIterator[tuple[HostsView, Claims]]:
    """The registry's view of the hosts, following the log as its fold does, and its claims."""
    view = HostsView()
    fold = hosts_fold(view)
    following = asyncio.create_task(fold.follow(store))
    yield view, Claims(fold, store)
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following


async def enrolled(
    store: EventStore,
    server: NatsServer,
    seed_file: Path,
    followed: tuple[HostsView, Claims],
    name: str,
    *,
    settle_s: float = 0.3,
) -> tuple[JoinToken, JoinHandler]:
    """A machine enrolled with a join token whose throwaway key `server` admits, and the
    registry's JoinHandler for it (`settle_s`: how long it waits for a reload before answering)."""
    token = await enroll_with_token(store, name, nats_url=server.url)
    await render(store, server)
    await connects(server.url, token.join_seed, token.host_id)
    auth = NatsAuthFiles(server.auth_file, server.pid_file, seed_file)
    view, claims = followed
    keeper = UsersFileKeeper(store, view, auth)
    return token, JoinHandler(store, view, keeper, claims, reload_settle_s=settle_s)


async def test_a_join_is_answered_though_the_users_file_is_rendered_again_before_the_answer(
    store: EventStore, guarded_nats: NatsServer, seed_file: Path, followed: tuple[HostsView, Claims]
) -> None:
    """Tried: a member redeems its token; the moment HostJoined is in the log, while the
    registry waits for nats-server's reload before answering, the users file is rendered again
    from the log by another renderer and nats-server reloads. Must hold: the member gets the
    registry's answer (redeem returns), and its new key connects."""
    # A long settle: the other render lands inside it, every time.
    token, handler = await enrolled(store, guarded_nats, seed_file, followed, "laptop-b", settle_s=2.0)
    order: list[str] = []

    async def answer(msg: object) -> None:
        data = await handler.join(token.host_id, msg.data)  # type: ignore[attr-defined]
        order.append("answered")
        await msg.respond(Reply(ok=True, data=data).model_dump_json().encode())  # type: ignore[attr-defined]

    async def render_once_joined() -> None:
        while True:
            records = await store.read_stream(host_stream(token.host_id))
            if any(r.type == HostJoined.type_name for r in records):
                break
            await asyncio.sleep(0.02)
        await render(store, guarded_nats)
        order.append("rendered again")

    service = await connect_bus(guarded_nats.url, name="registry", seed=SERVICE_SEED)
    try:
        await service.subscribe(host_subject(JOIN, token.host_id), cb=answer)
        await service.flush()
        other = asyncio.create_task(render_once_joined())
        seed, public = new_key_pair()
        async with asyncio.timeout(60):
            await redeem(token, public)
            await other
        assert order == ["rendered again", "answered"]
        await connects(guarded_nats.url, seed, token.host_id)
    finally:
        await service.close()


async def test_a_join_whose_answer_is_lost_after_the_key_was_admitted_goes_through(
    store: EventStore, guarded_nats: NatsServer, seed_file: Path, followed: tuple[HostsView, Claims]
) -> None:
    """Tried: the registry records HostJoined and admits the member's key, but its answer never
    reaches the member (here: it is not sent; a registry that crashed, NATS restarting). Must
    hold: `potluck join`'s redeem finds its new key admitted and goes on, rather than telling
    the member to try again with a token that is spent by then; and a join that no registry
    handled still fails, saying the registry did not answer."""
    token, handler = await enrolled(store, guarded_nats, seed_file, followed, "laptop-c")
    handled = asyncio.Event()

    async def admit_without_answering(msg: object) -> None:
        await handler.join(token.host_id, msg.data)  # type: ignore[attr-defined]
        handled.set()

    service = await connect_bus(guarded_nats.url, name="registry", seed=SERVICE_SEED)
    try:
        subscription = await service.subscribe(host_subject(JOIN, token.host_id), cb=admit_without_answering)
        await service.flush()
        seed, public = new_key_pair()
        async with asyncio.timeout(60):
            await redeem_or_find_admitted(token, seed, public, timeout=3)
        assert handled.is_set()
        records = await store.read_stream(host_stream(token.host_id))
        assert [r.data["nkey"] for r in records if r.type == HostJoined.type_name] == [public]

        # Nobody handles the next token's request: nothing was admitted, and the member is told so.
        await subscription.unsubscribe()
        unhandled = await enroll_with_token(store, "laptop-d", nats_url=guarded_nats.url)
        await render(store, guarded_nats)
        await connects(guarded_nats.url, unhandled.join_seed, unhandled.host_id)
        seed, public = new_key_pair()
        with pytest.raises(AnswerLost, match="did not answer the join request"):
            async with asyncio.timeout(60):
                await redeem_or_find_admitted(unhandled, seed, public, timeout=2, admitted_within=1)
    finally:
        await service.close()


async def test_a_join_run_again_after_an_interrupted_one_goes_on_with_the_admitted_key(
    store: EventStore,
    guarded_nats: NatsServer,
    seed_file: Path,
    followed: tuple[HostsView, Claims],
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    """Tried: a `potluck join` interrupted after the registry admitted its key (its credentials
    written, hostd.toml not, as Ctrl-C or a lost answer leaves it), then the same `potluck join`
    again. Must hold: the second goes on with the first one's key instead of making a new one
    (which would find the token spent): it writes hostd.toml naming the same credentials, the
    key connects, and the log holds one HostJoined, with that key. A credentials file of
    another host, or one that is not a key, is not taken for an unfinished join."""
    token, handler = await enrolled(store, guarded_nats, seed_file, followed, "laptop-e")

    async def answer(msg: object) -> None:
        data = await handler.join(token.host_id, msg.data)  # type: ignore[attr-defined]
        await msg.respond(Reply(ok=True, data=data).model_dump_json().encode())  # type: ignore[attr-defined]

    config = tmp_path / "member" / "hostd.toml"
    credentials = config.parent / f"{token.host_id}.creds"
    settings = JoinSettings(cpus=1, memory="1G", disk="2G", docker_url=docker_engine.url, config_path=config)
    service = await connect_bus(guarded_nats.url, name="registry", seed=SERVICE_SEED)
    try:
        await service.subscribe(host_subject(JOIN, token.host_id), cb=answer)
        await service.flush()
        # The first run, up to the moment it was interrupted: its credentials, the key admitted.
        seed, public = new_key_pair()
        credentials.parent.mkdir(parents=True)
        credentials.write_text(f'host_id = "{token.host_id}"\nnats_seed = "{seed}"\n')
        await redeem(token, public)
        assert not config.exists()

        joined = await asyncio.to_thread(join, encode(token), settings)
    finally:
        await service.close()
    assert joined.config.credentials_file == credentials.absolute()
    assert config.exists()
    assert f'nats_seed = "{seed}"' in credentials.read_text()
    await connects(guarded_nats.url, seed, token.host_id)
    records = await store.read_stream(host_stream(token.host_id))
    assert [r.data["nkey"] for r in records if r.type == HostJoined.type_name] == [public]

    assert unfinished_join_seed(credentials, token.host_id) == seed
    assert unfinished_join_seed(credentials, "h-another") is None
    credentials.write_text(f'host_id = "{token.host_id}"\nnats_seed = "SUNOTASEED"\n')
    assert unfinished_join_seed(credentials, token.host_id) is None
    assert unfinished_join_seed(tmp_path / "none.creds", token.host_id) is None


async def refused_from(url: str, seed: str, host_id: str, store: EventStore, timeout: float) -> datetime:
    """Wait until NATS refuses `seed`'s key; the log's time when it was first seen refused."""
    async with asyncio.timeout(timeout):
        while await admitted(url, seed, host_id):
            await asyncio.sleep(0.2)
    return await store.log_clock()


async def test_a_registry_restarted_inside_an_answer_window_takes_the_spent_key_out_when_it_ends(
    store: EventStore, guarded_nats: NatsServer, seed_file: Path, followed: tuple[HostsView, Claims]
) -> None:
    """Tried: a registry answers a join, then stops before the answer window ends (nothing of it
    runs on: its scheduled render died with it); a new registry starts inside the window.
    Must hold: the new one's start render keeps the spent token's key (the member may still be
    reading its answer), and the key is refused once the window has ended, without any other
    render to take it out; the member's own key connects throughout."""
    token, first = await enrolled(store, guarded_nats, seed_file, followed, "laptop-g")

    async def answer(msg: object) -> None:
        data = await first.join(token.host_id, msg.data)  # type: ignore[attr-defined]
        await msg.respond(Reply(ok=True, data=data).model_dump_json().encode())  # type: ignore[attr-defined]

    service = await connect_bus(guarded_nats.url, name="registry", seed=SERVICE_SEED)
    try:
        await service.subscribe(host_subject(JOIN, token.host_id), cb=answer)
        await service.flush()
        seed, public = new_key_pair()
        async with asyncio.timeout(60):
            await redeem(token, public)
    finally:
        await service.close()
    (joined,) = [
        r for r in await store.read_stream(host_stream(token.host_id)) if r.type == HostJoined.type_name
    ]

    assert first.users_file is not None
    restarted = UsersFileKeeper(store, await current_hosts(store), first.users_file.auth)
    await restarted.render_at_start()
    assert await store.log_clock() < joined.recorded_at + JOIN_ANSWER_WINDOW, (
        "the restart is inside the window"
    )
    assert await admitted(guarded_nats.url, token.join_seed, token.host_id)
    keeping = asyncio.create_task(restarted.run())
    try:
        refused_at = await refused_from(guarded_nats.url, token.join_seed, token.host_id, store, 30)
    finally:
        keeping.cancel()
    assert refused_at >= joined.recorded_at + JOIN_ANSWER_WINDOW
    await connects(guarded_nats.url, seed, token.host_id)


async def test_a_registry_whose_start_render_failed_renders_once_it_can(
    store: EventStore, guarded_nats: NatsServer, seed_file: Path
) -> None:
    """Tried: a machine is enrolled (its token's key not yet in the users file) and a registry
    starts while the file cannot be written: a directory stands where the users file goes (the
    running nats-server keeps what it loaded), which root's permissions cannot get past. Must
    hold: the start render says it failed and NATS still refuses the token's key while the
    obstacle stands; once it is gone, the registry's keeper renders on its own within its
    recheck (no join, no operator command to render it), and NATS admits the key."""
    token = await enroll_with_token(store, "laptop-i", nats_url=guarded_nats.url)
    # Not a directory at a temporary file's name: each render has a temporary file of its own.
    blocker = guarded_nats.auth_file
    blocker.replace(blocker.with_name(blocker.name + ".aside"))
    blocker.mkdir()
    keeper = UsersFileKeeper(
        store,
        await current_hosts(store),
        NatsAuthFiles(guarded_nats.auth_file, guarded_nats.pid_file, seed_file),
        recheck_s=0.5,
    )
    assert not await keeper.render_at_start()
    keeping = asyncio.create_task(keeper.run())
    try:
        await asyncio.sleep(1.5)  # three rechecks, each failing on the blocker
        assert not await admitted(guarded_nats.url, token.join_seed, token.host_id)
        blocker.rmdir()
        async with asyncio.timeout(30):
            while not await admitted(guarded_nats.url, token.join_seed, token.host_id):
                await asyncio.sleep(0.2)
    finally:
        keeping.cancel()


async def test_an_expired_tokens_key_leaves_the_users_file_when_it_expires(
    store: EventStore, guarded_nats: NatsServer, seed_file: Path
) -> None:
    """Tried: a machine enrolled with a join token that expires in 3 s, never redeemed, with a
    registry running. Must hold: NATS admits the token's key until the expiry and refuses it
    from then on, with no join or enrollment to render the file again."""
    token = await enroll_with_token(
        store, "laptop-h", nats_url=guarded_nats.url, expires_in=timedelta(seconds=3)
    )
    await render(store, guarded_nats)
    await connects(guarded_nats.url, token.join_seed, token.host_id)
    keeper = UsersFileKeeper(
        store,
        await current_hosts(store),
        NatsAuthFiles(guarded_nats.auth_file, guarded_nats.pid_file, seed_file),
    )
    keeping = asyncio.create_task(keeper.run())
    try:
        refused_at = await refused_from(guarded_nats.url, token.join_seed, token.host_id, store, 30)
    finally:
        keeping.cancel()
    assert refused_at >= token.expires_at


async def test_two_joins_with_one_key_at_once_admit_it_once(
    store: EventStore, guarded_nats: NatsServer, seed_file: Path, followed: tuple[HostsView, Claims]
) -> None:
    """Tried: two machines, each with its own join token, redeem them at the same moment with
    one NATS key (a key pair copied rather than made). Before: both checks ran before either
    HostJoined was appended, so both were recorded, and nats-server refused the users file
    that then listed the key twice (keeping its old one: no later join or revocation applied).
    Must hold: exactly one join is recorded and the other refused NKEY_TAKEN; the users file
    still reloads (a third machine's join goes through and its key connects)."""
    first_token, first = await enrolled(store, guarded_nats, seed_file, followed, "laptop-j")
    second_token, second = await enrolled(store, guarded_nats, seed_file, followed, "laptop-k")
    _, public = new_key_pair()
    joins = [
        handler.join(token.host_id, JoinRequest(token=token.secret, nkey=public).model_dump_json().encode())
        for token, handler in ((first_token, first), (second_token, second))
    ]
    outcomes = await asyncio.gather(*joins, return_exceptions=True)
    refusals = [o for o in outcomes if isinstance(o, Rejected)]
    assert [r.code for r in refusals] == ["NKEY_TAKEN"], outcomes
    recorded = [
        r.data["nkey"]
        for token in (first_token, second_token)
        for r in await store.read_stream(host_stream(token.host_id))
        if r.type == HostJoined.type_name
    ]
    assert recorded == [public], recorded

    third_token, third = await enrolled(store, guarded_nats, seed_file, followed, "laptop-l")
    seed, public = new_key_pair()
    await third.join(
        third_token.host_id, JoinRequest(token=third_token.secret, nkey=public).model_dump_json().encode()
    )
    await connects(guarded_nats.url, seed, third_token.host_id)
