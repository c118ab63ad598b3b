"""Who calls the HTTP API: bearer tokens against the users folded from the log, failures limited.

A failed authentication must cost the allocator next to nothing, or guessing
tokens becomes a way to tie it up:

- a token that is not shaped like one `new_token` gives (`pl_` and 43
  characters of URL-safe base64) fails at once;
- a well-shaped token that no user holds may belong to a user added a moment
  ago and not folded yet, so the model catches up with the log once, bounded
  by CATCH_UP_S, and concurrent failures share that one catch-up. When the log
  cannot be read (its database away) that token's holder is not known either
  way: `LogUnreadable`, which the API answers 503 LOG_UNAVAILABLE, not "this
  token is not valid" (a user added or given a new token just before an outage
  would be told to ask for another), and no failure is counted;
- each failure counts against the source address: `FailureWindow.limit`
  failures within `window_s` lock the address out (429, with Retry-After)
  until the oldest of them is older than the window. Only guessing is
  locked: a valid token still works, from another address or from this one
  (`known`). Tokens hold 256 random bits, so the lockout never stood between
  a guesser and a token; it bounds what guessing costs, and a good token
  costs one lookup. Refusing it too let one script looping on an old token
  lock out every user behind the same address (all of `potluck up`'s on
  loopback, everyone behind one proxy).

Nothing is stored: the counts live in memory, bounded by `max_sources`.
"""

import asyncio
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from potluck.allocator.users import User, UsersView
from potluck.events import database_away

__all__ = ["TOKEN_SHAPE", "Authenticator", "FailureWindow", "Locked", "LogUnreadable", "as_given"]

log = structlog.get_logger(__name__)

#: What `users.new_token` makes: "pl_" and 32 random bytes in URL-safe base64, unpadded.
TOKEN_SHAPE = re.compile(r"pl_[A-Za-z0-9_-]{43}")
#: What may stand around a token as it is sent: ASCII's whitespace (HTTP's own, space and tab,
#: around a header's value; a line end after a pasted one in a form), and nothing else.
AROUND_TOKEN = " \t\r\n"
#: How long a well-shaped unknown token waits for the log to be folded (a user added just now).
CATCH_UP_S = 2.0


def as_given(sent: str) -> str:
    """The token `sent` holds: itself without ASCII whitespace around it. Not `str.strip()`,
    which also takes Unicode's (a no-break space, U+3000, NEL): `Bearer <token>\\u00a0` was let
    in as the token, where a proxy in front, an audit or another service reads another string,
    and tokens are exact (they are hashed as sent)."""
    return sent.strip(AROUND_TOKEN)


class LogUnreadable(Exception):
    """A well-shaped token no folded user holds, and the log that may hold its user could not
    be read (`cause`, the database's error): neither valid nor invalid yet."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class Locked:
    """The source failed too often: refuse it for `retry_after_s`."""

    retry_after_s: float


class FailureWindow:
    """Failed authentications per source in a sliding window. Pure: the clock is passed in."""

    def __init__(self, *, limit: int = 30, window_s: float = 60.0, max_sources: int = 100_000) -> None:
        if limit < 1 or window_s <= 0 or max_sources < 1:
            raise ValueError("need limit >= 1, window_s > 0 and max_sources >= 1")
        self.limit = limit
        self.window_s = window_s
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, source: str, now: float) -> deque[float] | None:
        failures = self._failures.get(source)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[source]
            return None
        return failures

    def locked(self, source: str, now: float) -> Locked | None:
        """Whether `source` is locked out `now`, and for how long."""
        failures = self._recent(source, now)
        if failures is None or len(failures) < self.limit:
            return None
        # Unlocked once enough of the failures have aged out of the window.
        unlock_at = failures[len(failures) - self.limit] + self.window_s
        return Locked(max(unlock_at - now, 0.001))

    def failed(self, source: str, now: float) -> None:
        failures = self._recent(source, now) or deque()
        failures.append(now)
        # Failures beyond the limit only prolong the lockout; keep no more than that many.
        while len(failures) > self.limit:
            failures.popleft()
        self._failures.pop(source, None)
        self._failures[source] = failures  # most recently failed last
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)


class Authenticator:
    """Tokens to users for the HTTP API, with failures cheap and limited per source address."""

    def __init__(
        self,
        users: UsersView,
        catch_up: Callable[[], Awaitable[None]],
        *,
        failures: FailureWindow | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.users = users
        self.catch_up = catch_up
        # Not `failures or ...`: a window with no failures yet is empty, and so false (__len__).
        self.failures = failures if failures is not None else FailureWindow()
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self._catching_up: asyncio.Task[None] | None = None

    def locked(self, source: str) -> Locked | None:
        return self.failures.locked(source, self.clock())

    def known(self, token: str) -> User | None:
        """The user who holds `token` as the log is folded now: a lookup, nothing counted and
        no catch-up, so a locked-out address may still use a good token."""
        return self.users.authenticate(token)

    async def known_once_caught_up(self, token: str) -> User | None:
        """`known`, after the shared catch-up with the log when `token` is shaped like one and
        unknown now (a user added a moment ago): nothing counted, and a log that cannot be read
        leaves it unknown (`authenticate` then says so)."""
        try:
            return await self._looked_up(token)
        except LogUnreadable:
            return None

    async def authenticate(self, source: str, token: str) -> User | None:
        """The token's user, or None (counted as a failure of `source`); `LogUnreadable` when
        only the log could say, and it cannot be read now."""
        user = await self._looked_up(token)
        if user is None:
            self.failures.failed(source, self.clock())
            log.info("api.authentication_failed", source=source)
        return user

    async def _looked_up(self, token: str) -> User | None:
        """The token's user, after the shared catch-up when it is shaped like one and unknown
        now; `LogUnreadable` from the catch-up."""
        user = self.users.authenticate(token)
        if user is None and TOKEN_SHAPE.fullmatch(token):
            await self._caught_up()
            user = self.users.authenticate(token)
        return user

    async def _caught_up(self) -> None:
        """One catch-up with the log at a time, shared by whoever waits; at most CATCH_UP_S."""
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.ensure_future(self.catch_up())
            self._catching_up.add_done_callback(_consume)
        task = self._catching_up
        try:
            async with asyncio.timeout(CATCH_UP_S):
                await asyncio.shield(task)
        except Exception:
            # The task's own failure, not the wait's: asyncio's timeout is a TimeoutError too.
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None and database_away(failure):
                raise LogUnreadable(failure) from failure
            # A catch-up slower than CATCH_UP_S (a long log, a loaded machine) leaves the token
            # unknown: a 401 and a counted failure, or a guesser would keep catch-ups going
            # uncounted.


def _consume(task: "asyncio.Task[None]") -> None:
    # A catch-up that failed (the database away) just leaves the token unknown: 401.
    if not task.cancelled() and task.exception() is not None:
        log.warning("api.authentication_catch_up_failed", error=str(task.exception()))
