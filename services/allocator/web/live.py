"""Server-sent events: each open page gets its live part again whenever the allocator's fold moves.

The allocator's engine folds the log as it follows it; its `after_batch` hook
bumps `Changes`, and each open stream renders its page's live fragment anew
(coalescing changes that come within `SETTLE_S`) and sends it as one event.
The browser's static/live.js swaps the fragment in: no reload, and the page's
state is always the fold's, never patched piecewise by the client.
"""

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from aiohttp import web

from potluck.events import RecordedEvent

__all__ = ["Changes", "stream"]

#: Changes closer together than this go out as one event.
SETTLE_S = 0.1
#: A comment line this often keeps proxies and the browser from dropping a quiet stream.
KEEPALIVE_S = 15.0


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


def _event(name: str, html: str) -> bytes:
    # SSE's data lines cannot hold newlines: one `data:` per line, joined again by the browser.
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


async def stream(request: web.Request, changes: Changes, render: Callable[[], str]) -> web.StreamResponse:
    """Send `render()` now and after every change until the browser goes away."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    seen = changes.count
    last = render()
    await response.write(_event("fragment", last))
    try:
        while not changes.closed:
            now = await changes.after(seen, KEEPALIVE_S)
            if changes.closed:
                break
            if now == seen:
                await response.write(b": still here\n\n")
                continue
            await asyncio.sleep(SETTLE_S)
            seen = changes.count
            html = render()
            if html != last:
                last = html
                await response.write(_event("fragment", html))
    except ConnectionResetError:
        pass  # the browser went away: nothing to clean up
    return response
