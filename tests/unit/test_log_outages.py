"""What a request that met the event log's database away is answered (log_outages.py)."""

import asyncpg
import pytest

from potluck.allocator.log_outages import log_outage


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
def test_a_database_never_reached_did_nothing_whatever_the_method(method: str) -> None:
    for exc in (
        ConnectionRefusedError(111, "refused"),
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
    outage = log_outage("GET", ConnectionResetError(104, "reset"))
    assert outage is not None
    assert outage.code == "LOG_UNAVAILABLE"


def test_a_bug_is_no_outage() -> None:
    assert log_outage("POST", KeyError("x")) is None
    assert log_outage("GET", ValueError("x")) is None
