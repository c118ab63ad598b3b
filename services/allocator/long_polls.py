"""The API's long polls (`?wait=` of an allocation or a job, `?timeout=` seconds): which timeouts
it takes, as the code reads them and as /v1/openapi.json says, and how many one user may hold.

`timeout` is 0 (answer at once) or from MIN_WAIT_S to MAX_WAIT_S: nothing between, since no
clock times a wait of 1e-300 s and no client means one. `TIMEOUT_SCHEMA` says exactly that; it
said `minimum: 0`, so a client (or a fuzzer) built from the document sent 0.0001 and got a 400
the document did not foresee.

Each waiting request holds a connection and a waiter that every folded batch of the log wakes
to test its condition (Projection.wait_until). Only the connection caps (connection_caps.py,
per address and in all) bounded them: one user's token from a few addresses could hold
thousands, each woken by every batch, and take the connections everybody else's requests need.
`WaitSlots` bounds them per user; past the bound a wait is refused (429, Retry-After) rather
than answered at once, which would turn a client's loop of long polls into a busy loop.

aiohttp does not stop a handler whose client went away: a wait outlived its connection by up to
its whole timeout. So a client that sent `?wait=...&timeout=300` and hung up, again and again,
piled up waits the connection caps no longer counted (their connections were closed), and
a user who interrupted `potluck alloc create --wait` a few times held their own slots for
minutes. `while_connected` ends a wait within GONE_CHECK_S of its client leaving. (aiohttp's
`handler_cancellation` would do it for every handler, cancelling appends and reads halfway
through too: only a long poll has nothing to finish.)

And a wait ends at once when the allocator begins to stop (`WaitSlots.stop`, on the app's
shutdown): aiohttp's shutdown waits for requests under way, up to a minute, so a stopped
allocator holding long polls outlived its supervisor's grace and was killed, its waiting
clients left with a broken connection. Each is answered with the state as it is instead, as
a wait whose timeout passed is, and asks again (of a replica, or of the allocator restarted).
"""

import asyncio
import re
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from aiohttp import web

from potluck.kernel.rejections import Rejected

T = TypeVar("T")

__all__ = [
    "MAX_WAITS_PER_USER",
    "MAX_WAIT_S",
    "MIN_WAIT_S",
    "TIMEOUT_SCHEMA",
    "TooManyWaits",
    "WaitSlots",
    "parse_timeout",
    "while_connected",
]

MAX_WAIT_S = 300.0
#: The shortest wait other than none: a millisecond, what the event loop's clock can time.
MIN_WAIT_S = 0.001
#: The schema of `?timeout=` in /v1/openapi.json: what `parse_timeout` takes, and nothing else
#: (but "-0", which JSON Schema cannot tell from 0: the parameter's description says so).
TIMEOUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "const": 0},
        {"type": "number", "minimum": MIN_WAIT_S, "maximum": MAX_WAIT_S},
    ],
    "default": 30,
}
#: Long polls one user may have waiting at once: a script following a few dozen allocations or
#: jobs side by side; past it, polling them in turn (or `timeout=0`) still works.
MAX_WAITS_PER_USER = 32
#: When a wait refused past the bound says to try again: as soon as one of the user's ends.
WAITS_RETRY_S = 5
#: How often a waiting request looks whether its client is still there.
GONE_CHECK_S = 1.0
#: A JSON number (RFC 8259), of any length: TIMEOUT_SCHEMA's `number` bounds no digits, and
#: aiohttp's limit on a request line (8190 bytes) bounds the text before it is read here.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def parse_timeout(raw: str) -> float:
    """`?timeout=`'s seconds; Rejected (400, naming `timeout`) for anything TIMEOUT_SCHEMA refuses."""
    # The schema says "number": a JSON number's spelling, not all Python's float() takes
    # ("1_0", " 5", "infinity"), and every one of them (it said at most 30 fraction digits,
    # refusing 2.5000000000000000000000000000000001, which the schema takes).
    allowed = (
        f"timeout must be a number of seconds written as in JSON, e.g. 30 or 2.5 (no sign, "
        f"no spaces): 0 (answer at once) or from {MIN_WAIT_S:g} to {MAX_WAIT_S:g} seconds"
    )
    if not _NUMBER.fullmatch(raw):
        raise Rejected.invalid_field("timeout", allowed)
    # Compared as written, not as a float: 1e-400 is a float's 0 but a wait no clock times, and
    # 300.0000000000000001 a float's 300 but past the bound. Decimal reads any exponent exactly.
    try:
        exact = Decimal(raw)
    except InvalidOperation:
        # An exponent past what Decimal holds (about 10**18): the number is 0 if its digits
        # are, and otherwise far outside the bounds either way.
        if Decimal(re.split("[eE]", raw)[0]) != 0:
            raise Rejected.invalid_field("timeout", allowed) from None
        exact = Decimal(0)
    # "-0" is zero with a sign no count of seconds has: refused as a negative, never read as 0.
    if raw.startswith("-") or exact > Decimal(str(MAX_WAIT_S)):
        raise Rejected.invalid_field("timeout", allowed)
    if exact != 0 and exact < Decimal(str(MIN_WAIT_S)):
        raise Rejected.invalid_field("timeout", allowed)
    return float(exact)


class TooManyWaits(Rejected):
    """The user has as many long polls waiting as they may (429, with Retry-After)."""

    retry_after_s = WAITS_RETRY_S

    def __init__(self, limit: int) -> None:
        super().__init__(
            "TOO_MANY_WAITS",
            f"you already have {limit} requests waiting (?wait=); let one end, or ask without "
            f"wait (or with timeout=0), and try again in {WAITS_RETRY_S} s",
            status=429,
        )


class WaitSlots:
    """The long polls each user has waiting, refused past `per_user`; `stopping` once the
    allocator stops, which ends them all."""

    def __init__(self, per_user: int = MAX_WAITS_PER_USER) -> None:
        self.per_user = per_user
        self._by_user: Counter[str] = Counter()
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """Answer every wait now, and each one asked from now on at once."""
        self.stopping.set()

    def waiting(self, user: str) -> int:
        return self._by_user[user]

    @contextmanager
    def held(self, user: str) -> Iterator[None]:
        """One more wait of `user`'s while the block runs; TooManyWaits past the bound."""
        if self._by_user[user] >= self.per_user:
            raise TooManyWaits(self.per_user)
        self._by_user[user] += 1
        try:
            yield
        finally:
            left = self._by_user[user] - 1
            if left > 0:
                self._by_user[user] = left
            else:
                del self._by_user[user]


async def while_connected(
    request: web.Request, wait: Coroutine[Any, Any, T], stopping: asyncio.Event
) -> T | None:
    """What `wait` gives; None, `wait` cancelled, once the request's client has gone away (its
    connection closed or closing, looked at every GONE_CHECK_S) or `stopping` is set."""
    task = asyncio.ensure_future(wait)
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            await asyncio.wait({task, stopped}, timeout=GONE_CHECK_S, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            if stopped.done() or request.transport is None or request.transport.is_closing():
                return None
    finally:
        for pending in (task, stopped):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)
