"""How long a request's body may take to arrive: a bound, so that a client cannot hold a
connection and its handler by sending a body a byte now and then.

aiohttp closes a connection that is idle between requests (service.IDLE_CONNECTION_S) and
one whose request head trickles in, but it waits for a body as long as its bytes keep
coming. A sign-in form posted a byte every few seconds, with no token at all, held its
connection for as long as the client liked, and 512 of them (connection_caps.MAX_PER_ADDRESS)
every connection its address may hold: every user of a pool from `potluck up`, everyone
behind the same NAT. Past BODY_READ_S the request gets a 408 and aiohttp closes the
connection once its lingering time is over. The largest body the API takes (api.MAX_BODY,
256 KiB) arrives within it at 9 KB/s.
"""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from potluck.kernel.rejections import Rejected

__all__ = ["BODY_READ_S", "within"]

#: How long reading one request's body may take, from the handler's first read.
BODY_READ_S = 30.0

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
