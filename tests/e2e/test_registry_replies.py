"""What the services take from a host and tell it back: a failure is a stable code, what to do,
and an incident id that finds the detail in the service's log, never the failure's own text;
a text a host sends past its bound is refused, never stored (the real registry and allocator
processes, real NATS with nkeys and JetStream, a Postgres of the test's own)."""

import asyncio
import json
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.host_images import images_stream
from potluck.contracts.messages import Reply
from potluck.contracts.reports import ImagesHeld
from potluck.contracts.subjects import CONTROL, IMAGE_TOKEN, REGISTER, host_subject
from potluck.events import DEAD_LETTER_STREAM, Fold
from potluck.events.bus import H_DLQ_REASON, H_DLQ_SUBJECT, dead_letter_subject
from potluck.kernel.ssh_identity import load_or_create_key, public_key_line
from potluck.localstack.postgres_server import PostgresServer
from potluck.sshgateway.projection import GatewayView, key_blob
from tests.fixtures.pool import Pool


@pytest.mark.slow
async def test_a_registry_failure_tells_the_host_a_code_and_an_incident_never_the_exception(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a member's host asks the registry to pause it while the registry's Postgres is
    stopped, so the handler fails on the lost connection. Before: the reply's message was
    `registry failed: <the exception's repr>`, the database library's text (its class, the
    server's address) handed to whoever asked. Must hold: the reply is INTERNAL with a message
    that says what to do and an incident id, holds nothing of the exception, and the
    registry's log has that id on the line with the traceback."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, log_level="DEBUG")
    try:
        pool.start_registry()
        await pool.wait_registry()
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
        assert error["code"] == "INTERNAL", error
        message = str(error["message"])
        for leak in ("Error", "Exception", "(", str(own_postgres.port), "asyncpg", "Traceback"):
            assert leak not in message, (leak, message)
        incident = str(error["incident"])
        assert incident in message, error
        log_lines = [
            json.loads(line)
            for line in pool.processes["registry"].log_tail(2000).splitlines()
            if line.startswith("{") and incident in line
        ]
        assert log_lines, pool.logs()
        assert any(line.get("exception") for line in log_lines), log_lines
    finally:
        await pool.close()


async def test_a_bad_image_token_request_is_told_its_field_not_quoted_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a host asks the allocator for an image token with an allocation id of 100,000
    characters. Before: the reply was pydantic's whole text cut at 500 characters, quoting the
    host's input back and linking pydantic's pages. Must hold: BAD_REQUEST naming the field and
    the bound, holding none of the input."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, log_level="DEBUG")
    try:
        pool.start_allocator()
        await pool.wait_api()
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
    finally:
        await pool.close()


async def test_a_report_whose_id_is_past_its_bound_is_a_dead_letter_and_never_a_causation_id(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: a host reports the images its engine holds under a report id of 40,000
    characters (within the reports stream's 64 KiB), then reports again with a uuid4 id as
    hostd does. Before: the allocator logged HostImagesReported with the 40,000 characters as
    its causation id, in the log for good. Must hold: the first report is dead-lettered at
    once, its reason naming report_id; the second is logged; no event of the host's images
    carries a causation id longer than the bound."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, log_level="DEBUG")
    try:
        pool.start_allocator()
        await pool.wait_api()
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
    finally:
        await pool.close()


def _registration(ssh_host_key: str) -> bytes:
    """A registration as a hostd of this version sends it, naming `ssh_host_key`."""
    return json.dumps(
        {
            "donated": {"cpus": 1, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30},
            "engine": {
                "version": "27.0",
                "cgroup_version": "2",
                "storage_driver": "overlay2",
                "disk_quota_supported": False,
            },
            "hostd_version": "test",
            "ssh_host_key": ssh_host_key,
            "contract": CONTRACT_VERSION,
        }
    ).encode()


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
    Also tried: a line that is no OpenSSH public key. Must hold: A is refused SSH_KEY_TAKEN
    without learning which host holds the key, nothing of A's is recorded, B registers again,
    and the gateway's view of the log maps B's key to B; the bad line is refused
    BAD_SSH_HOST_KEY without quoting it back."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, log_level="DEBUG")
    try:
        pool.start_registry()
        await pool.wait_registry()
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
        mine = public_key_line(load_or_create_key(tmp_path / "a_host_key", comment="potluck-hostd-a"))
        assert (await _register(as_a, a.host_id, mine)).ok
        assert await _gateway_owner(pool, mine) == a.host_id
    finally:
        await pool.close()
