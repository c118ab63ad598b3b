"""How long hostd tries again around the engine's pause races (pause_races.py), without an engine:
the policies are given calls that fail as the engine does, and what they return or raise is read."""

import asyncio
import time
from typing import Any

import pytest
from tenacity import wait_none

from potluck.hostd import pause_races


class EngineFailed(Exception):
    pass


class Refused(Exception):
    pass


class Failing:
    """A call that raises `error` its first `times` calls, then returns "done"."""

    def __init__(self, times: int, error: Exception) -> None:
        self.times = times
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "done"


def _freezing(call: Failing) -> str:
    # Without the waits between tries (up to a second each): what is read is how often.
    for attempt in pause_races.freezing(_engine_failed).copy(wait=wait_none()):
        with attempt:
            return call()
    raise AssertionError("unreachable: tenacity returns or raises")


def _engine_failed(exc: BaseException) -> bool:
    return isinstance(exc, EngineFailed)


def test_a_freeze_the_engine_failed_is_tried_again_until_it_holds() -> None:
    """A pause failing twice with the engine's error, then holding. Afterwards it ran three times
    and returned; nothing was raised."""
    call = Failing(2, EngineFailed("OCI runtime pause failed: unable to freeze"))
    assert _freezing(call) == "done"
    assert call.calls == 3


def test_a_freeze_failing_every_time_raises_the_engines_own_error_after_the_attempts() -> None:
    call = Failing(99, EngineFailed("unable to freeze"))
    with pytest.raises(EngineFailed, match="unable to freeze"):
        _freezing(call)
    assert call.calls == pause_races.FREEZE_ATTEMPTS


def test_a_refusal_is_an_answer_and_is_not_tried_again() -> None:
    """A 409-like refusal (already paused, not running). Afterwards: raised at once, one call."""
    call = Failing(99, Refused("is not running"))
    with pytest.raises(Refused):
        _freezing(call)
    assert call.calls == 1


def test_an_exec_refused_as_paused_is_asked_again_and_a_lasting_pause_is_answered() -> None:
    """The engine says "is paused" twice, then creates the exec; for a second container it says
    so throughout. Afterwards the first got its 201 on the third call, and the second got the
    engine's 409 and its message back after about STALE_PAUSE_S, not an exception."""
    paused = {"message": "Container abc is paused, unpause the container before exec"}
    answers = [(409, paused), (409, paused), (201, {"Id": "e1"})]

    async def settling() -> tuple[int, Any]:
        return answers.pop(0)

    async def lasting() -> tuple[int, Any]:
        return 409, paused

    def still_paused(answer: tuple[int, Any]) -> bool:
        return answer[0] == 409 and pause_races.says_paused(str(answer[1]["message"]))

    async def both() -> tuple[tuple[int, Any], tuple[int, Any], float]:
        first = await pause_races.ask_while_paused(lambda: settling(), still_paused)
        started = asyncio.get_running_loop().time()
        second = await pause_races.ask_while_paused(lasting, still_paused)
        return first, second, asyncio.get_running_loop().time() - started

    first, second, waited = asyncio.run(both())
    assert first == (201, {"Id": "e1"})
    assert second == (409, paused)
    assert pause_races.STALE_PAUSE_S <= waited < pause_races.STALE_PAUSE_S + 1.0


def test_only_the_engines_paused_refusal_counts_as_paused() -> None:
    assert pause_races.says_paused("Container 93c9 is paused, unpause the container before exec")
    assert not pause_races.says_paused("Container 93c9 is not running")


def test_an_exec_start_refused_as_paused_is_started_again_and_other_refusals_are_not() -> None:
    """The engine refuses the start twice as paused, then upgrades it; another start is refused
    as not running. Afterwards: the first returned on its third call; the second raised its
    refusal on its first call."""
    paused = Refused("POST /exec/e1/start answered 409: Container abc is paused, unpause the container")
    settling, stopped = Failing(2, paused), Failing(99, Refused("Container abc is not running"))

    def refused_as_paused(exc: BaseException) -> bool:
        return pause_races.says_paused(str(exc))

    async def start(call: Failing) -> str:
        async for attempt in pause_races.starting_while_stale_paused(refused_as_paused):
            with attempt:
                return call()
        raise AssertionError("unreachable: tenacity returns or raises")

    assert asyncio.run(start(settling)) == "done"
    assert settling.calls == 3
    with pytest.raises(Refused, match="not running"):
        asyncio.run(start(stopped))
    assert stopped.calls == 1


def test_freezes_failing_slowly_stop_at_the_time_bound_before_the_attempts_run_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """runc fails a freeze only after trying for a while (0.4-1.2 s each on a loaded machine), so
    twelve attempts a second apart could hold an owner policy's pause for over 20 s. Tried: a pause the engine
    fails every time, each failure taking 50 ms, under a bound of 0.2 s (of 10 s in hostd).
    Afterwards: the engine's own error was raised, well before FREEZE_ATTEMPTS calls (12 calls
    take at least 0.6 s, so only the time bound can have ended them)."""
    monkeypatch.setattr(pause_races, "FREEZE_WITHIN_S", 0.2)

    class SlowlyFailing(Failing):
        def __call__(self) -> str:
            time.sleep(0.05)
            return super().__call__()

    call = SlowlyFailing(99, EngineFailed("unable to freeze"))
    with pytest.raises(EngineFailed, match="unable to freeze"):
        _freezing(call)
    assert 1 <= call.calls <= 5 < pause_races.FREEZE_ATTEMPTS
