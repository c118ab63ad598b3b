"""What a request that met the event log's database away is answered (log_outages.py)."""

import asyncpg
import pytest

from potluck.allocator.log_outages import log_outage
from tests.fixtures.refused_database import connect_to_no_database


async def _refused_by_the_database() -> OSError:
    with pytest.raises(ConnectionRefusedError) as refused:
        await connect_to_no_database()
    return refused.value


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
async def test_a_database_never_reached_did_nothing_whatever_the_method(method: str) -> None:
    for exc in (
        await _refused_by_the_database(),
        asyncpg.exceptions.CannotConnectNowError("shutting down"),
    ):
        outage = log_outage(method, exc)
        assert outage is not None
        assert (outage.status, outage.code) == (503, "LOG_UNAVAILABLE")
        assert "nothing was done" in outage.message


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_a_change_that_lost_its_connection_may_have_been_made(method: str) -> None:
    lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    outage = log_outage(method, lost)
    assert outage is not None
    assert (outage.status, outage.code) == (503, "OUTCOME_UNKNOWN")
    assert "may or may not have been made" in outage.message


def test_a_read_that_lost_its_connection_did_nothing() -> None:
    outage = log_outage("GET", asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"))
    assert outage is not None
    assert outage.code == "LOG_UNAVAILABLE"


def test_a_bug_is_no_outage() -> None:
    assert log_outage("POST", KeyError("x")) is None
    assert log_outage("GET", ValueError("x")) is None


def _raise(exc: OSError) -> None:
    raise exc


@pytest.mark.parametrize(
    "own",
    [OSError(28, "No space left on device"), ConnectionRefusedError(111, "refused"), TimeoutError()],
    ids=["disk-full", "refused-elsewhere", "own-timeout"],
)
def test_an_os_error_or_timeout_of_the_allocators_own_is_no_outage(own: OSError) -> None:
    """Tried: the classes asyncpg raises for the database away, raised by the allocator's own
    code (a full disk, a refused connection elsewhere, a timeout of its own). Must hold: none is
    an outage of the log (before, each was answered 503 "the event log cannot be reached"
    and logged without a traceback)."""
    with pytest.raises(OSError) as raised:  # noqa: PT011 - which one is the parameter's
        _raise(own)
    assert log_outage("POST", raised.value) is None
    assert log_outage("GET", raised.value) is None
