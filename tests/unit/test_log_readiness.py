"""How /readyz asks the event log's database (services/allocator/log_readiness.py), without one:
the ping here is a coroutine the test answers, holds or fails."""

import asyncio

import asyncpg
import pytest

from potluck.allocator.log_readiness import LogReadiness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ping:
    """Counts questions; each waits for `gate` (open: answers at once) and then raises `fails`."""

    def __init__(self) -> None:
        self.asked = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fails: BaseException | None = None

    async def __call__(self) -> None:
        self.asked += 1
        await self.gate.wait()
        if self.fails is not None:
            raise self.fails


async def test_many_probes_at_once_ask_once_and_an_answer_is_kept_for_fresh_s() -> None:
    """Tried: fifty probes at once, then one within fresh_s, then one after. Must hold: one
    question for the fifty and the one after them, a second only once the answer is stale."""
    ping, clock = Ping(), Clock()
    ping.gate.clear()
    readiness = LogReadiness(ping, timeout_s=5.0, fresh_s=1.0, clock=clock)

    probes = [asyncio.create_task(readiness.answers()) for _ in range(50)]
    await asyncio.sleep(0)
    ping.gate.set()
    assert await asyncio.gather(*probes) == [True] * 50
    assert ping.asked == 1

    clock.now += 0.5
    assert await readiness.answers() is True
    assert ping.asked == 1
    clock.now += 1.0
    assert await readiness.answers() is True
    assert ping.asked == 2


async def test_a_question_unanswered_in_time_is_not_ready_and_never_asked_twice_at_once() -> None:
    """Tried: a database that holds the question (stopped), probed again and again, then answers.
    Must hold: not ready after timeout_s; later probes are told at once (no second question, so
    no second connection held); once it answers, ready again; the held question was never
    cancelled (cancelling a query on a stopped server waits on that server too)."""
    ping, clock = Ping(), Clock()
    ping.gate.clear()
    readiness = LogReadiness(ping, timeout_s=0.05, fresh_s=1.0, clock=clock)

    assert await readiness.answers() is False
    clock.now += 5.0  # stale, and the question is older than timeout_s: answered at once
    with pytest.raises(StopIteration) as answered:  # the probe ends without waiting on anything
        readiness.answers().send(None)
    assert answered.value.value is False
    assert ping.asked == 1

    ping.gate.set()
    for _ in range(5):  # the held question completes: its answer is the one kept
        await asyncio.sleep(0)
    assert await readiness.answers() is True
    assert ping.asked == 1


async def test_a_database_error_or_a_bug_in_the_ping_is_not_ready_not_a_failure() -> None:
    """Tried: the ping refused (connection refused), then raising an error of no database kind.
    Must hold: each is "not ready" (a probe never fails with 500), and the next stale probe asks
    again."""
    ping, clock = Ping(), Clock()
    readiness = LogReadiness(ping, timeout_s=1.0, fresh_s=1.0, clock=clock)

    ping.fails = ConnectionRefusedError()
    assert await readiness.answers() is False
    clock.now += 2
    ping.fails = asyncpg.exceptions.UndefinedFunctionError("clock_timestamp")
    assert await readiness.answers() is False
    clock.now += 2
    ping.fails = None
    assert await readiness.answers() is True
    assert ping.asked == 3
