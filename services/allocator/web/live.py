"""Server-sent events: each open page gets its live part again whenever the allocator's fold moves.

The allocator's engine folds the log as it follows it; its `after_batch` hook
bumps `Changes`, and each open stream renders its page's live fragment anew
(coalescing changes that come within `SETTLE_S`) and sends it as one event.
The browser's static/live.js swaps the fragment in: no reload, and the page's
state is always the fold's, never patched piecewise by the client.

Every open stream holds a connection (a file descriptor, a task, a render per
change; a log tail also asks a member's host once a second), so `StreamSlots`
bounds how many one session and one owner hold at once: past the bound a
stream is refused (429, routes.py) and the ones already open go on. All owners together
hold at most `MAX_STREAMS`, so that many members' and users' pages cannot take the allocator's
file descriptors from its API: past it a stream is refused (503) until others end.
"""

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

from aiohttp import web

from potluck.events import RecordedEvent

__all__ = [
    "Changes",
    "StreamSlots",
    "StreamsFull",
    "TooManyStreams",
    "changed_or_gone",
    "gone",
    "signed_out_event",
    "sse_event",
    "stream",
]

#: Changes closer together than this go out as one event.
SETTLE_S = 0.1
#: A comment line this often keeps proxies and the browser from dropping a quiet stream.
KEEPALIVE_S = 15.0
#: How often a waiting stream looks whether its browser went away: aiohttp does not stop a
#: handler whose client left, so without it a closed tab's stream (and its slot) lived on until
#: its next write, up to KEEPALIVE_S later.
GONE_CHECK_S = 1.0
#: One session's open streams: a page holds one, an allocation's page two (with its log). A
#: browser keeps at most six connections to one site over HTTP/1.1, so ordinary tabs stay
#: under it; through an HTTP/2 proxy it still leaves room for a handful of tabs.
MAX_STREAMS_PER_SESSION = 10
#: One owner's (a user's, a member's token's, the operators') across their sessions: a couple
#: of browsers' worth. Unbounded, one user held 5,000 streams and slowed everybody's API.
MAX_STREAMS_PER_OWNER = 20
#: Everybody's: well under a laptop's default 1,024 open files, which the API's own connections,
#: the bus and the database share.
MAX_STREAMS = 500


class TooManyStreams(Exception):
    """A session or its owner holds as many live streams as it may; the message says which."""


class StreamsFull(TooManyStreams):
    """The allocator holds as many live streams as it serves, whoever holds them."""


class StreamSlots:
    """Counts the live streams each session and each owner holds, and refuses one past a bound."""

    def __init__(
        self,
        *,
        per_session: int = MAX_STREAMS_PER_SESSION,
        per_owner: int = MAX_STREAMS_PER_OWNER,
        total: int = MAX_STREAMS,
    ) -> None:
        self.per_session = per_session
        self.per_owner = per_owner
        self.total = total
        self._by_session: Counter[Hashable] = Counter()
        self._by_owner: Counter[str] = Counter()

    def open_of(self, owner: str) -> int:
        return self._by_owner[owner]

    def take(self, session: Hashable, owner: str) -> None:
        """Count one more stream of `session` (its owner's); TooManyStreams past either bound,
        StreamsFull past everybody's."""
        if self._by_session[session] >= self.per_session:
            raise TooManyStreams(
                f"this browser already has {self.per_session} live pages open; close some tabs "
                "of this pool's page and reload this one"
            )
        if self._by_owner[owner] >= self.per_owner:
            raise TooManyStreams(
                f"you already have {self.per_owner} live pages open (in all your browsers); close "
                "some and reload this one"
            )
        if self._by_owner.total() >= self.total:
            raise StreamsFull(
                f"this pool's page serves {self.total} live pages at once and all are open; "
                "reload this one in a minute"
            )
        self._by_session[session] += 1
        self._by_owner[owner] += 1

    def give_back(self, session: Hashable, owner: str) -> None:
        """One stream of `session` ended (the counts drop their zeros)."""
        self._by_session[session] -= 1
        self._by_owner[owner] -= 1
        if self._by_session[session] <= 0:
            del self._by_session[session]
        if self._by_owner[owner] <= 0:
            del self._by_owner[owner]


class Changes:
    """A counter of folded batches that streams wait on."""

    def __init__(self) -> None:
        self.count = 0
        self.closed = False
        self._moved = asyncio.Event()

    def close(self) -> None:
        """End every stream: the app shuts down, and would otherwise wait for open pages."""
        self.closed = True
        self._moved.set()

    def folded(self, batch: Sequence[RecordedEvent]) -> None:
        self.count += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def after(self, seen: int, timeout: float) -> int:
        """The count once it passed `seen` (at once if it has), or as it is after `timeout`."""
        if self.count == seen:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._moved.wait()
        return self.count


def gone(request: web.Request) -> bool:
    """Whether the browser of this request went away (its connection is closed or closing)."""
    transport = request.transport
    return transport is None or transport.is_closing()


#: What a stream sends as it ends because its session did (signed out, expired, its token
#: replaced): the page says so instead of going quietly stale (static/live.js, log_tail.js).
SIGNED_OUT = "signed-out"
SIGNED_OUT_TEXT = "You were signed out here (or your token changed): reload the page to sign in again."


async def changed_or_gone(
    request: web.Request, changes: Changes, seen: int, timeout: float, signed_in: Callable[[], bool]
) -> int:
    """`changes.after(seen, timeout)`, but back within GONE_CHECK_S once the browser went away
    or its session ended (`signed_in` says no)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        now = await changes.after(seen, max(0.0, min(GONE_CHECK_S, left)))
        if now != seen or changes.closed or gone(request) or not signed_in() or left <= GONE_CHECK_S:
            return now


def signed_out_event() -> bytes:
    return sse_event(SIGNED_OUT, SIGNED_OUT_TEXT)


#: What ends a line of an event stream (the SSE standard: CRLF, LF or CR), and only that.
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")


def sse_event(name: str, data: str, event_id: str | None = None) -> bytes:
    """One server-sent event whose `data` reaches the browser as it is (but CR and CRLF, which
    the browser joins back as LF, as an HTML parser reads them anyway).

    Data lines cannot hold a line end: one `data:` per line, split where the browser splits
    and nowhere else. (str.splitlines also split at U+2028, U+2029, U+0085, VT, FF and
    U+001C-U+001E, which the browser does not: a member's failure message holding one showed
    changed on the live page.) The name and id are fields of one line each: a line end in either
    would start a field of its own (an event of the sender's choosing), so such an id is left
    out (the browser then keeps the last one), and a name must be one of ours."""
    if _SSE_LINE_END.search(name) or not name:
        raise ValueError(f"{name!r} is not an event name")
    head = ""
    if event_id is not None and not _SSE_LINE_END.search(event_id) and "\0" not in event_id:
        head = f"id: {event_id}\n"
    lines = "".join(f"data: {line}\n" for line in _SSE_LINE_END.split(data))
    return f"{head}event: {name}\n{lines}\n".encode()


async def stream(
    request: web.Request, changes: Changes, render: Callable[[], str], signed_in: Callable[[], bool]
) -> web.StreamResponse:
    """Send `render()` now and after every change until the browser goes away, or its session
    ends (`signed_in` says no: then a `signed-out` event, and nothing rendered for it)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    seen = changes.count
    last = render()
    await response.write(sse_event("fragment", last))
    try:
        while not changes.closed:
            now = await changed_or_gone(request, changes, seen, KEEPALIVE_S, signed_in)
            if changes.closed or gone(request):
                break
            if now != seen:
                await asyncio.sleep(SETTLE_S)
            # Looked at after the settling too: a change within it may be the one signing it out.
            if not signed_in():
                await response.write(signed_out_event())
                break
            if now == seen:
                await response.write(b": still here\n\n")
                continue
            seen = changes.count
            html = render()
            if html != last:
                last = html
                await response.write(sse_event("fragment", html))
    except ConnectionResetError:
        pass  # the browser went away: nothing to clean up
    return response
