"""How the registry answers a host's request whose handler fails (real NATS; the handlers are
the test's: one with a bug, one meeting the database away).

A bug is INTERNAL: the requester reads a code, what to do and an incident id, the operator's
log has the traceback under that id. The event log away is LOG_UNAVAILABLE: no bug, so no
traceback, and logged sparingly, since every host asks again until it is back.
"""

import asyncio
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
from tests.fixtures.refused_database import connect_to_no_database
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


async def test_an_os_error_or_timeout_of_the_registrys_own_is_internal_not_the_log_away(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Tried: handlers failing with the classes a database away raises, from four places: the
    users file written under a path that is a file (NotADirectoryError, an OSError), a wait of
    the handler's own cut off (asyncio's TimeoutError), Postgres refusing the connection on a
    loopback port nothing listens on (ConnectionRefusedError out of asyncpg), and a NATS
    request no one answers (NATS's TimeoutError). Before, the first two were LOG_UNAVAILABLE,
    logged as "the pool's Postgres is stopped" without a traceback, so an unwritable users file
    looked like a database outage. Must hold: the first two are INTERNAL, each logged with its
    traceback under its incident; the last two are LOG_UNAVAILABLE, no traceback."""
    gate = HostRequestGate(ReplyGuard("registry"), KeyRates(RatePolicy(per_s=1000.0, burst=1000)))
    (tmp_path / "auth").write_text("a file where a directory is expected\n")
    bus = await connect_client(nats_server.url)
    await bus.subscribe("test.silent", cb=_never_answer)

    async def unwritable_file(host_id: str, payload: bytes) -> dict[str, object]:
        (tmp_path / "auth" / "users.json").write_text("{}")
        return {}

    async def own_wait_cut_off(host_id: str, payload: bytes) -> dict[str, object]:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
        return {}

    async def database_refused(host_id: str, payload: bytes) -> dict[str, object]:
        await connect_to_no_database()
        return {}

    async def bus_silent(host_id: str, payload: bytes) -> dict[str, object]:
        await bus.request("test.silent", b"", timeout=0.2)
        return {}

    try:
        answers = {}
        with capture_logs() as logs:
            for handler in (unwritable_file, own_wait_cut_off, database_refused, bus_silent):
                [answers[handler.__name__]] = await _ask(nats_server, gate, handler, 1)
    finally:
        await bus.close()
    codes = {name: reply.error["code"] if reply.error else None for name, reply in answers.items()}
    assert codes == {
        "unwritable_file": "INTERNAL",
        "own_wait_cut_off": "INTERNAL",
        "database_refused": "LOG_UNAVAILABLE",
        "bus_silent": "LOG_UNAVAILABLE",
    }, answers
    failed = [line for line in logs if line["event"] == "registry.request_failed"]
    incidents = [(answers[name].error or {})["incident"] for name in ("unwritable_file", "own_wait_cut_off")]
    assert [line["incident"] for line in failed] == incidents, failed
    assert all(line.get("exc_info") for line in failed), failed
    away = [line for line in logs if line["event"] == "registry.log_unavailable"]
    assert len(away) == 2, away
    assert not any(line.get("exc_info") for line in away), away
    assert gate.log_away == 2


async def _never_answer(msg: object) -> None:
    """A responder that takes a request and says nothing."""
