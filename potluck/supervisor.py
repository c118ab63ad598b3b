"""Keeps `potluck up`'s service processes running: one that dies is started again.

A child that keeps dying soon after each start is restarted after pauses that
grow (tenacity's exponential wait, the retry library the project already
uses), so a crash loop does not spin the machine; one that ran a while before
dying is restarted at once, and its next crashes start a new series of pauses.
Every death and restart is said on the console. A child that exits with a
code saying it stopped for good (`FINAL_EXIT_CODES`: hostd of a machine that
left the pool or was revoked) is said once and not restarted: starting it
again would only be refused again. Cancelling the watch (as
`potluck down` does, through `serve`) restarts nothing more; stopping the
children stays with whoever started them.
"""

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from potluck.localstack.errors import LocalStackError

Say = Callable[[str], None]


class Supervised(Protocol):
    """What can be watched and started again: a ChildProcess, or a server that runs one
    (NatsServer, PostgresServer), whose `start` returns once it serves."""

    @property
    def pid(self) -> int | None: ...

    def running(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def start(self) -> None: ...


#: Exit codes of a child that stopped for good: `potluck hostd` exits 3 on HostdStopped (not
#: enrolled, left the pool, revoked), which no restart mends.
FINAL_EXIT_CODES: frozenset[int] = frozenset({3})


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    #: A child that ran this long before dying is restarted at once, its pauses start over.
    stable_after_s: float = 60.0
    poll_s: float = 0.5


class _StoppedForGood(Exception):
    pass


class _DiedSoon(Exception):
    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


def _how_it_ended(proc: Supervised) -> str:
    code = proc.exit_code()
    if code is not None and code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, say: Say, policy: RestartPolicy | None = None) -> None:
        self.say = say
        self.policy = policy or RestartPolicy()
        self.restarts: dict[str, int] = {}

    async def keep_running(self, name: str, proc: Supervised) -> None:
        """Watch `proc` until cancelled, starting it again whenever it dies, unless it stopped
        for good (then the watch ends)."""
        try:
            while True:
                await self._until_stable(name, proc)
                await self._exited(proc)
                self._unless_final(name, proc)
                self.say(f"{name} {_how_it_ended(proc)} after running a while; restarting it now")
                try:
                    await self._restart(name, proc)
                except LocalStackError as exc:
                    # Not running: the next watch sees it die at once and tries again after a pause.
                    self.say(f"{name} could not be started ({exc})")
        except _StoppedForGood:
            return

    def _unless_final(self, name: str, proc: Supervised) -> None:
        if proc.exit_code() in FINAL_EXIT_CODES:
            self.say(
                f"{name} {_how_it_ended(proc)}: it stopped for good (see its log for why); not restarting it"
            )
            raise _StoppedForGood(name)

    async def _until_stable(self, name: str, proc: Supervised) -> None:
        """Return once `proc` has run `stable_after_s`; restart it, with growing pauses,
        each time it dies sooner."""

        def announce(state: RetryCallState) -> None:
            assert state.outcome is not None
            assert state.next_action is not None
            how = str(state.outcome.exception())
            self.say(f"{name} {how}; restarting it in {round(state.next_action.sleep, 2):g}s")

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_DiedSoon),
            wait=wait_exponential(multiplier=self.policy.first_delay_s, max=self.policy.max_delay_s),
            before_sleep=announce,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    try:
                        await self._restart(name, proc)
                    except LocalStackError as exc:
                        raise _DiedSoon(f"could not be started ({exc})") from exc
                try:
                    async with asyncio.timeout(self.policy.stable_after_s):
                        await self._exited(proc)
                except TimeoutError:
                    return
                self._unless_final(name, proc)
                raise _DiedSoon(_how_it_ended(proc))

    async def _exited(self, proc: Supervised) -> None:
        # Polled: the children are plain Popen processes (they outlive no event loop, and
        # `potluck up` started them before one ran), and a poll is one non-blocking waitpid.
        while True:
            if not proc.running():
                return
            await asyncio.sleep(self.policy.poll_s)

    async def _restart(self, name: str, proc: Supervised) -> None:
        # In a thread: a server's start waits until it serves (Postgres: seconds). A watch
        # cancelled meanwhile (`potluck down`) ends only once that start has: whoever cancels it
        # then stops the children, this one with them, and none is started after the stop.
        starting = asyncio.ensure_future(asyncio.to_thread(proc.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await starting
            raise
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.say(f"restarted {name} (pid {proc.pid}, restart {self.restarts[name]})")
