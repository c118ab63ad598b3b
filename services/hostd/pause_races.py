"""Two moments when the engine's own pause gets in the way, and how long hostd tries again.

- **A freeze that fails.** runc freezes a container through its cgroup's freezer and gives up
  when the processes do not settle in time ("OCI runtime pause failed: unable to freeze"): on a
  loaded machine, which is when an owner policy freezes the pool. The engine answers 500 and
  leaves the container as it was. A pause or unpause the engine failed that way is tried again,
  up to `FREEZE_ATTEMPTS` times within `FREEZE_WITHIN_S`, a second apart at most; a refusal
  (409: not running, already paused) is an answer and is not. (Five tries over 1.5 s were too
  few: a full test run saw runc fail five in a row over 2.8 s, each taking 0.4-1.2 s, freezing
  a container whose shell forks `sleep` five times a second.)
- **A container that still says paused.** Docker 20.10 marks a container paused when `pause`
  returns and again when containerd's paused event reaches the daemon's event queue (moby
  daemon/monitor.go, `EventPaused`: "if !c.Paused { c.Paused = true }"). An unpause that lands
  between the two is undone until the resumed event follows, and an exec in that moment is
  refused with 409 "... is paused, unpause the container before exec", at its create or at its
  start. An exec refused that way is tried again for up to `STALE_PAUSE_S`; a container that
  stays paused is refused after it, in the engine's own words.

tenacity holds both policies: the retry library is a dependency already (image_pull.py,
libs/events/decide.py) and says in one place what is tried, how often and how long apart.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

__all__ = [
    "FREEZE_ATTEMPTS",
    "FREEZE_WITHIN_S",
    "STALE_PAUSE_S",
    "ask_while_paused",
    "freezing",
    "says_paused",
    "starting_while_stale_paused",
    "while_stale_paused",
]

log = structlog.get_logger(__name__)

FREEZE_ATTEMPTS = 12
FREEZE_WITHIN_S = 10.0
STALE_PAUSE_S = 1.0
_STALE_PAUSE_EVERY_S = 0.05


def says_paused(message: str) -> bool:
    """The engine refused an exec because it holds the container paused."""
    return "is paused" in message


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.info("engine.pause_retried", attempt=state.attempt_number, error=str(error))


def freezing(engine_failed: Callable[[BaseException], bool]) -> Retrying:
    """A pause or unpause, tried again while `engine_failed` says the engine failed it."""
    return Retrying(
        stop=stop_after_attempt(FREEZE_ATTEMPTS) | stop_after_delay(FREEZE_WITHIN_S),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        retry=retry_if_exception(engine_failed),
        before_sleep=_log_retry,
        reraise=True,
    )


def _while_stale_paused(refused_as_paused: Callable[[BaseException], bool]) -> dict[str, Any]:
    """How long and how often an exec the engine refuses as paused is tried again."""
    return {
        "stop": stop_after_delay(STALE_PAUSE_S),
        "wait": wait_fixed(_STALE_PAUSE_EVERY_S),
        "retry": retry_if_exception(refused_as_paused),
        "reraise": True,
    }


def while_stale_paused(refused_as_paused: Callable[[BaseException], bool]) -> Retrying:
    """An exec (blocking), tried again while the engine refuses it as paused."""
    return Retrying(**_while_stale_paused(refused_as_paused))


def starting_while_stale_paused(refused_as_paused: Callable[[BaseException], bool]) -> AsyncRetrying:
    """An exec's start (an upgraded connection, so a new one each time), tried again while the
    engine refuses it as paused."""
    return AsyncRetrying(**_while_stale_paused(refused_as_paused))


def _last_answer(state: RetryCallState) -> Any:
    assert state.outcome is not None
    return state.outcome.result()


async def ask_while_paused(
    ask: Callable[[], Awaitable[tuple[int, Any]]], still_paused: Callable[[tuple[int, Any]], bool]
) -> tuple[int, Any]:
    """An engine call's `(status, body)`, asked again while `still_paused` says the answer is
    the container paused (an inspect's State.Paused, an exec create's 409); the last answer
    when the time is up."""

    async def asked() -> tuple[int, Any]:
        # tenacity awaits what a coroutine function returns; `ask` may be a plain lambda.
        return await ask()

    answer: tuple[int, Any] = await AsyncRetrying(
        stop=stop_after_delay(STALE_PAUSE_S),
        wait=wait_fixed(_STALE_PAUSE_EVERY_S),
        retry=retry_if_result(still_paused),
        retry_error_callback=_last_answer,
    )(asked)
    return answer
