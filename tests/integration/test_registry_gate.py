"""How the registry answers a host's request whose handler fails (real NATS; the handlers are
the test's: one with a bug, one meeting the database away).

A bug is INTERNAL: the requester reads a code, what to do and an incident id, the operator's
log has the traceback under that id. The event log away is LOG_UNAVAILABLE: no bug, so no
traceback, and logged sparingly, since every host asks again until it is back.
"""

import time
from pathlib import Path

import asyncpg
from structlog.testing import capture_logs

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import inbox_prefix
from potluck.events.replies import ReplyGuard
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.localstack import NatsServer
from potluck.registry.replies import HostHandler, HostRequestGate
from tests.fixtures.servers import connect_client

HOST = "h-0123456789ab"


async def _ask(
    nats_server: NatsServer, gate: HostRequestGate, handler: HostHandler, times: int
) -> list[Reply]:
    """`times` requests on one host's subject, answered by `gate` with `handler`."""
    service = await connect_client(nats_server.url)
    host = await connect_client(nats_server.url, inbox_prefix=inbox_prefix(HOST))
    try:
        await service.subscribe(f"test.{HOST}", cb=gate.on_request(handler))
        await service.flush()
        replies = []
        for _ in range(times):
            msg = await host.request(f"test.{HOST}", b"{}", timeout=10)
            replies.append(Reply.model_validate_json(msg.data))
        return replies
    finally:
        await host.close()
        await service.close()


async def test_a_bug_is_internal_with_an_incident_and_a_database_away_is_not_now(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Tried: one handler raises a bug (a KeyError naming a secret-looking path), another the
    error asyncpg raises when Postgres refuses connections, 30 times (hosts asking again).
    Must hold: the bug is INTERNAL with an incident id in its message and nothing of the
    exception, its traceback logged under that id; the database away is LOG_UNAVAILABLE,
    saying to ask again, nothing of the exception, logged without a traceback, at most ten
    lines for the thirty requests and one a second after (eleven when they take under a second)."""
    gate = HostRequestGate(ReplyGuard("registry"), KeyRates(RatePolicy(per_s=1000.0, burst=1000)))

    async def buggy(host_id: str, payload: bytes) -> dict[str, object]:
        raise KeyError(str(tmp_path / "secret"))

    async def database_away(host_id: str, payload: bytes) -> dict[str, object]:
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    with capture_logs() as logs:
        [bug] = await _ask(nats_server, gate, buggy, 1)
    assert bug.error is not None
    assert bug.error["code"] == "INTERNAL", bug
    assert str(bug.error["incident"]) in str(bug.error["message"]), bug
    assert "secret" not in str(bug.error), bug
    logged = [line for line in logs if line["event"] == "registry.request_failed"]
    assert [line["incident"] for line in logged] == [bug.error["incident"]], logged
    assert all(line.get("exc_info") for line in logged), logged

    started = time.monotonic()
    with capture_logs() as logs:
        away = await _ask(nats_server, gate, database_away, 30)
    took = time.monotonic() - started
    assert {r.error["code"] for r in away if r.error is not None} == {"LOG_UNAVAILABLE"}, away
    assert len([r for r in away if r.error is not None]) == 30
    message = str(away[0].error["message"]) if away[0].error else ""
    assert "ask again" in message, message
    assert "starting up" not in message, message
    assert "asyncpg" not in message, message
    logged = [line for line in logs if line["event"] == "registry.log_unavailable"]
    assert 1 <= len(logged) <= 10 + took + 1, (len(logged), took)
    assert not any(line.get("exc_info") for line in logged), logged
    assert gate.log_away == 30
