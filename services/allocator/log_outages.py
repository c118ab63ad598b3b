"""What a user is told when their request meets the event log away (Postgres stopped or
restarting): a 503 saying to try again, never a 500 that blames the allocator. Pure.

The log is the truth, so while it is away nothing can be decided or read back; the request
failed for a reason of the pool's, not of the client's and not a bug. Two answers:

- `LOG_UNAVAILABLE`: the database could not even be reached (the connection was refused, or
  the server said it cannot take connections now), so nothing of the request was recorded and
  the same request may be sent again as it is.
- `OUTCOME_UNKNOWN`: a change met the connection lost while it was being recorded; its commit
  may have landed before the loss. Sent again blindly it could be made twice (two
  allocations), so the user is told to look first.

A read that fails either way did nothing, and is `LOG_UNAVAILABLE`.
"""

from dataclasses import dataclass

import asyncpg

from potluck.events import database_away

__all__ = ["LOG_OUTAGE_RETRY_AFTER_S", "LogOutage", "log_outage"]

#: Seconds a client is told to wait before trying again (Retry-After): a restart of Postgres.
LOG_OUTAGE_RETRY_AFTER_S = 2

#: Failures to open a connection: the request never reached the database.
_NEVER_REACHED: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

#: Methods that change nothing.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class LogOutage:
    """The refusal to answer: its stable code and the user's message."""

    code: str
    message: str
    retry_after_s: int = LOG_OUTAGE_RETRY_AFTER_S
    status: int = 503


def log_outage(method: str, exc: BaseException) -> LogOutage | None:
    """The answer to a `method` request that failed with `exc`; None: `exc` is no outage of
    the event log (a bug, answered as such), whatever its class: an OSError or a timeout is the
    database's only when raised through asyncpg (`database_away`)."""
    if not database_away(exc):
        return None
    if method.upper() in _READS or isinstance(exc, _NEVER_REACHED):
        return LogOutage(
            "LOG_UNAVAILABLE",
            "the pool's event log (its database) cannot be reached just now; nothing was done: "
            f"try again in {LOG_OUTAGE_RETRY_AFTER_S} seconds or so",
        )
    return LogOutage(
        "OUTCOME_UNKNOWN",
        "the pool's event log (its database) was lost while this change was being recorded, so "
        "it may or may not have been made: once the pool answers again, look (GET "
        "/v1/allocations, /v1/jobs) before asking again",
    )
