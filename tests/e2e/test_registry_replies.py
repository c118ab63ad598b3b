"""What the services take from a host and tell it back: a failure is a stable code, what to do,
and an incident id that finds the detail in the service's log, never the failure's own text;
a text a host sends past its bound is refused, never stored (the real registry and allocator
processes, real NATS with nkeys and JetStream, a Postgres of the test's own)."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from potluck.contracts.host_events import host_stream
from potluck.contracts.host_images import images_stream
from potluck.contracts.messages import RegisterHost, Reply
from potluck.contracts.reports import ImagesHeld
from potluck.contracts.subjects import (
    CONTROL,
    IMAGE_TOKEN,
    JOIN,
    POLICY,
    REGISTER,
    STATUS,
    host_subject,
    inbox_prefix,
    join_inbox_prefix,
)
from potluck.events import DEAD_LETTER_STREAM, Event, Fold
from potluck.events.bus import H_DLQ_REASON, H_DLQ_SUBJECT, dead_letter_subject
from potluck.kernel.ssh_identity import load_or_create_key, public_key_line
from potluck.localstack.postgres_server import PostgresServer
from potluck.member.join import admitted
from potluck.readmodels.hosts import HostState
from potluck.registry import host as aggregate
from potluck.registry.admitted_keys import JOIN_ANSWER_WINDOW
from potluck.registry.enrollment import enroll_with_token, refresh_nats_authorization
from potluck.registry.nats_auth import new_user_key
from potluck.registry.repository import decide_on_host
from potluck.sshgateway.projection import GatewayView, key_blob
from tests.fixtures.pool import Pool
from tests.fixtures.registrations import registration
from tests.fixtures.servers import connect_client
from tests.helpers import json_log


@pytest.mark.slow
async def test_a_registry_whose_database_is_away_says_not_now_and_never_the_exception(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a member's host asks the registry to pause it while the registry's Postgres is
    stopped, so the handler fails on the lost connection. Before: the reply's message was
    `registry failed: <the exception's repr>`, the database library's text (its class, the
    server's address) handed to whoever asked; then INTERNAL with a traceback in the log for
    every host asking again. Must hold: the reply is LOG_UNAVAILABLE with a message that says
    what to do and holds nothing of the exception; the registry's log says so in one line
    without a traceback. (A bug's INTERNAL and its incident id: tests/integration/test_registry_gate.py.)"""
    async with _running(tmp_path, own_postgres, "registry") as pool:
        host = await pool.enroll("laptop-a")
        nc = await pool.client(host)
        await asyncio.to_thread(own_postgres.stop)
        try:
            msg = await nc.request(
                host_subject(CONTROL, host.host_id), json.dumps({"action": "pause"}).encode(), timeout=60
            )
        finally:
            await asyncio.to_thread(own_postgres.start)
        reply = Reply.model_validate_json(msg.data)
        assert not reply.ok, reply
        assert reply.error is not None, reply
        error = reply.error
        assert error["code"] == "LOG_UNAVAILABLE", error
        message = str(error["message"])
        assert "ask again" in message, message
        for leak in ("Error", "Exception", "(", str(own_postgres.port), "asyncpg", "Traceback"):
            assert leak not in message, (leak, message)
        log_lines = json_log(pool.processes["registry"].log_tail(2000), "registry.log_unavailable")
        assert log_lines, pool.logs()
        assert not any(line.get("exception") for line in log_lines), log_lines
        assert "registry.request_failed" not in pool.processes["registry"].log_tail(2000)


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, postgres: PostgresServer, service: str) -> AsyncIterator[Pool]:
    """A pool with `service` (the registry or the allocator) started and answering."""
    pool = await Pool.create(tmp_path / "pool", postgres.url, log_level="DEBUG")
    try:
        if service == "registry":
            pool.start_registry()
            await pool.wait_registry()
        else:
            pool.start_allocator()
            await pool.wait_api()
        yield pool
    finally:
        await pool.close()


async def test_a_bad_image_token_request_is_told_its_field_not_quoted_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a host asks the allocator for an image token with an allocation id of 100,000
    characters. Before: the reply was pydantic's whole text cut at 500 characters, quoting the
    host's input back and linking pydantic's pages. Must hold: BAD_REQUEST naming the field and
    the bound, holding none of the input."""
    async with _running(tmp_path, own_postgres, "allocator") as pool:
        host = await pool.enroll("laptop-a")
        nc = await pool.client(host)
        body = json.dumps({"alloc_id": "q" * 100_000, "image": "busybox"}).encode()
        msg = await nc.request(host_subject(IMAGE_TOKEN, host.host_id), body, timeout=30)
        reply = Reply.model_validate_json(msg.data)
        assert not reply.ok, reply
        assert reply.error is not None, reply
        assert reply.error["code"] == "BAD_REQUEST", reply.error
        message = str(reply.error["message"])
        assert message.startswith("alloc_id: "), message
        assert "128" in message, message
        assert "qqq" not in message, message
        assert "pydantic" not in message, message


async def test_a_report_whose_id_is_past_its_bound_is_a_dead_letter_and_never_a_causation_id(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a host reports the images its engine holds under a report id of 40,000
    characters (within the reports stream's 64 KiB), then reports again with a uuid4 id as
    hostd does. Before: the allocator logged HostImagesReported with the 40,000 characters as
    its causation id, in the log for good. Must hold: the first report is dead-lettered at
    once, its reason naming report_id; the second is logged; no event of the host's images
    carries a causation id longer than the bound."""
    async with _running(tmp_path, own_postgres, "allocator") as pool:
        host = await pool.enroll("laptop-a")
        js = (await pool.client(host)).jetstream()
        subject = f"potluck.report.{host.host_id}.images"
        long_id = ImagesHeld(images=["docker.io/library/busybox:latest"]).model_dump(mode="json")
        long_id["report_id"] = "r" * 40_000
        await js.publish(subject, json.dumps(long_id).encode())
        usual = ImagesHeld(images=["docker.io/library/alpine:latest"])
        await js.publish(subject, usual.model_dump_json().encode())
        deadline = asyncio.get_running_loop().time() + 30
        while await pool.store.stream_version(images_stream(host.host_id)) == 0:
            assert asyncio.get_running_loop().time() < deadline, pool.logs()
            await asyncio.sleep(0.1)
        records = await pool.store.read_stream(images_stream(host.host_id))
        causes = [str(r.metadata.get("causation_id")) for r in records]
        assert causes == [usual.report_id], [len(c) for c in causes]
        services = (await pool.client()).jetstream()
        dlq = dead_letter_subject("allocator-reports")
        info = await services.stream_info(DEAD_LETTER_STREAM)
        reasons = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await services.get_msg(DEAD_LETTER_STREAM, seq=seq)
            if msg.subject == dlq and msg.headers is not None and msg.headers[H_DLQ_SUBJECT] == subject:
                reasons.append(msg.headers[H_DLQ_REASON])
        assert len(reasons) == 1, reasons
        assert "report_id" in reasons[0], reasons


def _registration(ssh_host_key: str) -> bytes:
    """A registration as a hostd of this version sends it, naming `ssh_host_key`."""
    return json.dumps(registration(ssh_host_key=ssh_host_key)).encode()


async def _register(nc: NATS, host_id: str, ssh_host_key: str) -> Reply:
    msg = await nc.request(host_subject(REGISTER, host_id), _registration(ssh_host_key), timeout=30)
    return Reply.model_validate_json(msg.data)


async def _gateway_owner(pool: Pool, key_line: str) -> str | None:
    """The host the gateway maps a link presenting `key_line` to, folding the log as it does."""
    view = GatewayView()
    await Fold(view, reader="test").catch_up(pool.store)
    blob = key_blob(key_line)
    assert blob is not None
    return view.host_for_key(blob)


async def test_a_host_cannot_register_an_ssh_host_key_another_host_holds(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: machine B registers its SSH host key and deregisters (its member stops it for a
    while); member A, who learnt B's public key line, registers it as A's own, with another
    comment; B comes back and registers again. Before: A's registration was recorded, and the
    gateway, which maps a link's key to the first host that claims it, then refused every link
    of B (A could not use the key either, holding no private half: the loss was B's alone).
    Also tried: a line that is no OpenSSH public key, and an RSA key (the link takes ed25519
    only: before, it was recorded and every link of the host then failed its handshake).
    Must hold: A is refused SSH_KEY_TAKEN without learning which host holds the key, nothing of
    A's is recorded, B registers again,
    and the gateway's view of the log maps B's key to B; the bad line is refused
    BAD_SSH_HOST_KEY without quoting it back, the RSA key BAD_SSH_HOST_KEY naming ed25519."""
    async with _running(tmp_path, own_postgres, "registry") as pool:
        a, b = await pool.enroll("laptop-a"), await pool.enroll("laptop-b")
        as_a, as_b = await pool.client(a), await pool.client(b)
        key = public_key_line(load_or_create_key(tmp_path / "b_host_key", comment="potluck-hostd-b"))
        assert (await _register(as_b, b.host_id, key)).ok
        deregister = json.dumps({"action": "deregister"}).encode()
        msg = await as_b.request(host_subject(CONTROL, b.host_id), deregister, timeout=30)
        assert Reply.model_validate_json(msg.data).ok, msg.data
        kind, data = key.split()[:2]
        stolen = await _register(as_a, a.host_id, f"{kind} {data} laptop-a")
        assert not stolen.ok, stolen
        assert stolen.error is not None
        assert stolen.error["code"] == "SSH_KEY_TAKEN", stolen.error
        assert b.host_id not in str(stolen.error), stolen.error
        assert not (await pool.hosts()).hosts[a.host_id].registered
        assert (await _register(as_b, b.host_id, key)).ok
        assert await _gateway_owner(pool, key) == b.host_id
        bad = await _register(as_a, a.host_id, "ssh-evil " + "Z" * 5000)
        assert not bad.ok, bad
        assert bad.error is not None
        assert bad.error["code"] == "BAD_SSH_HOST_KEY", bad.error
        assert "ZZZ" not in str(bad.error), bad.error
        assert "evil" not in str(bad.error), bad.error
        rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
        other_kind = await _register(as_a, a.host_id, public_key_line(rsa))
        assert not other_kind.ok, other_kind
        assert other_kind.error is not None
        assert other_kind.error["code"] == "BAD_SSH_HOST_KEY", other_kind.error
        assert "ed25519" in other_kind.error["message"], other_kind.error
        mine = public_key_line(load_or_create_key(tmp_path / "a_host_key", comment="potluck-hostd-a"))
        assert (await _register(as_a, a.host_id, mine)).ok
        assert await _gateway_owner(pool, mine) == a.host_id


async def test_a_join_tokens_throwaway_identity_reads_no_host_replies_and_asks_nothing_else(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: whoever else holds a join token (a copy of the line its member was sent)
    connects with its throwaway identity before the member joins, subscribes to the host's
    reply inbox, and publishes where a host would (register, status, another host's join);
    the member joins; the machine, now with its own key, asks the registry for its status.
    Before: the throwaway could subscribe to the host's whole inbox, so for the answer window
    after the join it read every reply sent to the new machine (the events its consumer
    delivers there, allocations' environments among them, the registry's answers). Must
    hold: the throwaway cannot subscribe there and reads nothing of the machine's; every
    publish but its own join is refused by NATS; a second join with the token is refused
    TOKEN_SPENT; and once the answer window is over the throwaway's connection is closed and
    it cannot connect again."""
    async with _running(tmp_path, own_postgres, "registry") as pool:
        other = await pool.enroll("laptop-a")
        token = await enroll_with_token(pool.store, "laptop-b", nats_url=pool.nats.url)
        await refresh_nats_authorization(pool.store, pool.nats.auth_file, [pool.services_seed], None)
        pool.nats.reload()
        errors: list[str] = []
        closed = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        async def on_closed() -> None:
            closed.set()

        spy = await connect_client(
            pool.nats.url.split(","),
            nkeys_seed_str=token.join_seed,
            inbox_prefix=join_inbox_prefix(token.host_id),
            error_cb=on_error,
            closed_cb=on_closed,
            allow_reconnect=False,
        )
        read: list[str] = []

        async def keep(msg: Msg) -> None:
            read.append(msg.subject)

        await spy.subscribe(f"{inbox_prefix(token.host_id)}.>", cb=keep)
        for subject in (
            host_subject(REGISTER, token.host_id),
            host_subject(STATUS, token.host_id),
            host_subject(JOIN, other.host_id),
        ):
            await spy.publish(subject, b"{}")
        await spy.flush()
        await asyncio.sleep(0.5)
        refused = [e for e in errors if "permissions violation" in e.lower()]
        host_inbox = f'subscription to "{inbox_prefix(token.host_id)}.>"'.lower()
        assert any(host_inbox in e.lower() for e in refused), errors
        for subject in (REGISTER, STATUS):
            assert any(host_subject(subject, token.host_id) in e for e in refused), errors
        assert any(host_subject(JOIN, other.host_id) in e for e in refused), errors

        own = new_user_key()
        joined = await pool.redeem_join(token, own.public)
        assert joined.ok, joined
        machine = await connect_client(
            pool.nats.url.split(","), nkeys_seed_str=own.seed, inbox_prefix=inbox_prefix(token.host_id)
        )
        try:
            msg = await machine.request(host_subject(STATUS, token.host_id), b"{}", timeout=30)
            assert Reply.model_validate_json(msg.data).ok, msg.data
        finally:
            await machine.close()
        again = await pool.redeem_join(token, new_user_key().public)
        assert not again.ok, again
        assert again.error is not None
        assert again.error["code"] == "TOKEN_SPENT", again.error
        await asyncio.sleep(0.5)
        assert read == [], read
        async with asyncio.timeout(JOIN_ANSWER_WINDOW.total_seconds() + 20):
            await closed.wait()
        assert not await admitted(pool.nats.url, token.join_seed, token.host_id)


async def test_a_policy_change_naming_an_infinite_freeze_is_refused_not_logged_as_another(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a registered host tells the registry it froze, with `max_frozen_s` Infinity
    (JSON that pydantic reads as a float, though hostd never writes it: a member's `inf` goes
    out as null). Before: the registry decided on Infinity and logged null (pydantic writes no
    Infinity into JSON): its view said one thing and the log, which every replay reads,
    another. Must hold: BAD_REQUEST naming max_frozen_s, nothing recorded on the host's
    stream, and the same change with a finite value is recorded."""
    async with _running(tmp_path, own_postgres, "registry") as pool:
        host = await pool.enroll("laptop-a")
        nc = await pool.client(host)
        assert (await _register(nc, host.host_id, "")).ok
        version = await pool.store.stream_version(host_stream(host.host_id))
        subject = host_subject(POLICY, host.host_id)
        body = b'{"state": "frozen", "cause": "owner", "reason": "owner busy", "max_frozen_s": Infinity}'
        reply = Reply.model_validate_json((await nc.request(subject, body, timeout=30)).data)
        assert not reply.ok, reply
        assert reply.error is not None
        assert reply.error["code"] == "BAD_REQUEST", reply.error
        assert str(reply.error["message"]).startswith("max_frozen_s: "), reply.error
        assert await pool.store.stream_version(host_stream(host.host_id)) == version
        finite = body.replace(b"Infinity", b"600")
        reply = Reply.model_validate_json((await nc.request(subject, finite, timeout=30)).data)
        assert reply.ok, reply
        assert reply.data["recorded"] == ["HostFrozen"], reply.data


async def test_hosts_that_shared_a_key_before_the_check_register_again_and_a_new_claim_is_refused(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: the log holds two hosts registered with one SSH host key, as a registry from
    before the check recorded them (a state_dir copied to a second machine); each registers
    again with it, as every hostd restart does; then a third host claims the same key. Must
    hold: both registrations go through (neither machine is worse off than before the check:
    the gateways link the first), and the third is refused SSH_KEY_TAKEN."""
    async with _running(tmp_path, own_postgres, "registry") as pool:
        first, second, third = [await pool.enroll(f"laptop-{n}") for n in ("a", "b", "c")]
        key = public_key_line(load_or_create_key(tmp_path / "shared_key", comment="copied"))
        request = RegisterHost.model_validate_json(_registration(key))
        for host in (first, second):

            def decide(state: HostState | None, host_id: str = host.host_id) -> list[Event]:
                return aggregate.register(state, host_id, request)

            await decide_on_host(pool.store, host.host_id, decide, {"actor": "test"})
        for host in (first, second):
            nc = await pool.client(host)
            reply = await _register(nc, host.host_id, key)
            assert reply.ok, (host.name, reply)
        assert await _gateway_owner(pool, key) == first.host_id
        claim = await _register(await pool.client(third), third.host_id, key)
        assert not claim.ok, claim
        assert claim.error is not None
        assert claim.error["code"] == "SSH_KEY_TAKEN", claim.error
