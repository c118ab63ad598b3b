"""Failed authentications: cheap, and limited per source address.

What is tried: failures from one address up to and past the limit, the window passing,
many addresses, and concurrent unknown tokens. What must hold: the address is locked after
`limit` failures within the window and only until enough of them age out; other addresses
are not affected; memory stays bounded; a malformed token never waits for the log, and
concurrent well-shaped unknown tokens share one catch-up.
"""

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.authentication import Authenticator, FailureWindow, LogUnreadable
from potluck.allocator.users import UsersView, add_user
from potluck.contracts.allocation_events import Quota
from tests.fixtures.refused_database import connect_to_no_database


def test_an_address_is_locked_after_the_limit_until_failures_age_out() -> None:
    window = FailureWindow(limit=3, window_s=60.0)
    for t in (0.0, 10.0):
        window.failed("10.0.0.1", t)
        assert window.locked("10.0.0.1", t) is None
    window.failed("10.0.0.1", 20.0)
    locked = window.locked("10.0.0.1", 20.0)
    assert locked is not None
    assert locked.retry_after_s == pytest.approx(40.0)  # the first failure leaves the window at 60
    assert window.locked("10.0.0.2", 20.0) is None
    assert window.locked("10.0.0.1", 60.5) is None
    window.failed("10.0.0.1", 61.0)  # 10, 20 and 61 within the window: locked again until 70
    assert window.locked("10.0.0.1", 61.0) is not None
    assert window.locked("10.0.0.1", 200.0) is None
    assert len(window) == 0


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1)), max_size=200))
def test_locked_exactly_when_the_window_holds_limit_failures(steps: list[tuple[str, float]]) -> None:
    window = FailureWindow(limit=4, window_s=5.0)
    now = 0.0
    seen: dict[str, list[float]] = {}
    for source, dt in steps:
        now += dt
        window.failed(source, now)
        seen.setdefault(source, []).append(now)
        for s, times in seen.items():
            recent = [t for t in times if t > now - 5.0]
            assert (window.locked(s, now) is not None) == (len(recent) >= 4)


def test_memory_is_bounded_by_the_addresses_kept() -> None:
    window = FailureWindow(limit=2, window_s=60.0, max_sources=100)
    for i in range(1000):
        window.failed(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
    assert len(window) == 100


async def test_unknown_tokens_cost_at_most_one_shared_catch_up() -> None:
    users = UsersView()
    [added], token = add_user(None, "alice", Quota())
    catch_ups = 0

    async def catch_up() -> None:
        nonlocal catch_ups
        catch_ups += 1
        await asyncio.sleep(0.05)
        users.apply(added)  # the user added a moment ago is folded now

    auth = Authenticator(users, catch_up, failures=FailureWindow(limit=100))
    assert await auth.authenticate("a", "not-a-token") is None
    assert catch_ups == 0  # malformed: no wait for the log at all
    found = await asyncio.gather(*(auth.authenticate("a", token) for _ in range(20)))
    assert catch_ups == 1
    assert {u.name if u else None for u in found} == {"alice"}
    assert await auth.authenticate("a", "pl_" + "B" * 43) is None
    assert catch_ups == 2
    assert auth.failures.locked("a", auth.clock()) is None


async def test_a_catch_up_that_hangs_leaves_the_token_unknown_and_counts_a_failure() -> None:
    """Tried: a well-shaped unknown token while the catch-up with the log never ends.
    Must hold: the answer comes (bounded by CATCH_UP_S, not by the catch-up): no user, one
    failure counted against the address."""

    async def hang() -> None:
        await asyncio.Event().wait()

    auth = Authenticator(UsersView(), hang, failures=FailureWindow(limit=1))
    async with asyncio.timeout(30):
        assert await auth.authenticate("a", "pl_" + "C" * 43) is None
    assert auth.failures.locked("a", auth.clock()) is not None


async def _connection_lost() -> None:
    raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")


async def _database_starting() -> None:
    raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")


@pytest.mark.parametrize(
    ("fail", "raised_class"),
    [
        (connect_to_no_database, ConnectionRefusedError),
        (_connection_lost, asyncpg.exceptions.ConnectionDoesNotExistError),
        (_database_starting, asyncpg.exceptions.CannotConnectNowError),
    ],
    ids=["refused", "lost", "starting"],
)
async def test_a_catch_up_the_database_fails_is_no_verdict_on_the_token(
    fail: Callable[[], Awaitable[None]], raised_class: type[Exception]
) -> None:
    """Tried: a well-shaped unknown token while the log's database is away (the catch-up fails
    with what asyncpg raises then), from an address one failure from its lockout.
    Must hold: LogUnreadable carrying the database's error (the API's 503 LOG_UNAVAILABLE), not
    "no such user" (a 401 telling a user added just before the outage that their token is not
    valid); no failure is counted, so the address is not locked out."""
    auth = Authenticator(UsersView(), fail, failures=FailureWindow(limit=1))
    with pytest.raises(LogUnreadable) as raised:
        await auth.authenticate("a", "pl_" + "C" * 43)
    assert type(raised.value.cause) is raised_class
    assert raised.value.__cause__ is raised.value.cause
    assert auth.failures.locked("a", auth.clock()) is None
