"""What the registry tells a host when it fails: a stable code, what to do, and an incident id
that finds the detail in the registry's log; never the failure's own text (the real registry
process, real NATS with nkeys, a Postgres of the test's own that it stops)."""

import asyncio
import json
from pathlib import Path

import pytest

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import CONTROL, IMAGE_TOKEN, host_subject
from potluck.localstack.postgres_server import PostgresServer
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
