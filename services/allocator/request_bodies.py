"""How long a request's body may take to arrive: a bound, so that a client cannot hold a
connection and its handler by sending a body a byte now and then.

aiohttp closes a connection that is idle between requests (service.IDLE_CONNECTION_S) and
one whose request head trickles in, but it waits for a body as long as its bytes keep
coming. A sign-in form posted a byte every few seconds, with no token at all, held its
connection for as long as the client liked, and 512 of them (connection_caps.MAX_PER_ADDRESS)
every connection its address may hold: every user of a pool from `potluck up`, everyone
behind the same NAT. Past BODY_READ_S the request gets a 408 and aiohttp closes the
connection once its lingering time is over. The largest body the API takes (MAX_BODY,
256 KiB) arrives within it at 9 KB/s.

A client that asks before sending its body (`Expect: 100-continue`, as curl does past 1 KiB)
was told to go on whatever the body's length: aiohttp's own answer to Expect sends `100
Continue` before any handler or middleware has looked at the request, so a body declared at
a gigabyte was invited, read up to MAX_BODY and only then refused. `continue_if_it_fits`
answers 413 at once to a declared length past MAX_BODY; the connection serves nothing after
it (aiohttp reads and drops what the client sends anyway for its lingering time, then closes).
"""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web
from aiohttp.http import HttpVersion11

from potluck.kernel.rejections import Rejected

__all__ = ["BODY_READ", "BODY_READ_S", "MAX_BODY", "continue_if_it_fits", "within"]

#: How long reading one request's body may take, from the handler's first read (the
#: allocator's --body-read-timeout changes it).
BODY_READ_S = 30.0
#: The app's own bound (make_app's `body_read_s`), which the handlers read bodies within.
BODY_READ: web.AppKey[float] = web.AppKey("body_read_s", float)
#: The largest body the allocator reads (the API's JSON, the pages' forms); past it, 413.
MAX_BODY = 256 * 1024

T = TypeVar("T")


async def within(read: Awaitable[T], limit_s: float = BODY_READ_S) -> T:
    """`read` (a request's body), or a 408 BODY_TOO_SLOW when it takes longer than `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            return await read
    except TimeoutError:
        raise Rejected(
            "BODY_TOO_SLOW",
            f"the body did not arrive within {limit_s:g} s; send it all at once",
            status=408,
        ) from None


async def continue_if_it_fits(request: web.Request) -> web.StreamResponse | None:
    """The answer to `Expect: 100-continue` (a route's expect_handler): 413 BODY_TOO_LARGE at
    once when the declared length is past MAX_BODY, else `100 Continue` (417 for any other
    expectation, as aiohttp answers)."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:40]}")
    if request.content_length is not None and request.content_length > MAX_BODY:
        message = f"the body is larger than {MAX_BODY // 1024} KiB; nothing was read"
        response = web.json_response({"error": {"code": "BODY_TOO_LARGE", "message": message}}, status=413)
        response.force_close()  # the connection serves no request after it (its body may follow)
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own size is counted from its status line
    return None
