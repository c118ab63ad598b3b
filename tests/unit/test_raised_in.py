"""Telling the database away from a process's own OSError by where it was raised (raised_in.py,
potluck.events.database_away)."""

import asyncpg

from potluck.events import database_away
from potluck.kernel.raised_in import raised_in


def _raise(exc: BaseException) -> None:
    raise exc


def _raised(exc: BaseException) -> BaseException:
    """`exc` once raised here (with this module's frames in its traceback)."""
    try:
        _raise(exc)
    except BaseException as raised:  # any class: handed back as raised
        return raised
    raise AssertionError("not raised")


def test_an_exception_raised_here_passed_through_this_package_and_not_asyncpgs() -> None:
    """Tried: an OSError raised in this module, and one never raised. Must hold: the first
    passed through `tests` (this module's package) and not `asyncpg`; the second through
    nothing."""
    raised = _raised(OSError(28, "No space left on device"))
    assert raised_in(raised, ("tests",))
    assert not raised_in(raised, ("asyncpg",))
    assert not raised_in(OSError(28, "No space left on device"), ("tests",))


def test_a_cause_is_looked_through() -> None:
    """Tried: a TimeoutError raised (as asyncio.timeout raises it) from an error raised here,
    caught by a frame of no package. Must hold: it counts as raised through this package."""
    cut_off = TimeoutError()
    cut_off.__cause__ = _raised(ConnectionResetError(104, "reset"))
    assert raised_in(cut_off, ("tests",))
    assert not raised_in(TimeoutError(), ("tests",))


def test_asyncpgs_own_errors_are_the_database_whatever_raised_them_and_a_bare_oserror_is_not() -> None:
    """Tried: asyncpg's connection errors and builtin ones, neither raised through asyncpg.
    Must hold: asyncpg's are the database away; ConnectionRefusedError, a full disk and a
    timeout of the process's own are not (asyncpg raising them is tested against a real port:
    tests/integration/test_registry_gate.py); a bug is not either."""
    for own in (
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.InterfaceError("connection is closed"),
    ):
        assert database_away(own), own
    for elsewhere in (
        ConnectionRefusedError(111, "refused"),
        OSError(28, "No space left on device"),
        TimeoutError(),
        KeyError("x"),
    ):
        assert not database_away(_raised(elsewhere)), elsewhere
