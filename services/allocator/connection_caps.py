"""How many HTTP connections the allocator holds open: per client address, and in all.

Each open connection holds a file descriptor and a request handler. Idle ones are closed
after IDLE_CONNECTION_S, but one client can open them far faster than that: thousands at
once would leave the allocator no descriptors for other users, for Postgres or for NATS. Past
a cap a new connection is closed as soon as it is accepted, before anything is read from it;
those already open are untouched.

An address here is a client's (`client_of`): an IPv4 address, or an IPv6 address's /64. One
machine or household on IPv6 is given a whole /64 and may send from any address in it (privacy
addresses rotate within it on their own): counted per address, a single client could take the
total cap with eight addresses, and the failed-authentication limit (authentication.py), which
counts by the same key, never applied to it.

The cap per address is generous: every user of a pool from `potluck up`, and everyone behind
one NAT, comes from one address, and a browser holds a few connections per page plus one per
live part (the web's streams have their own cap, MAX_STREAMS, below this one).

`ConnectionCaps` decides (pure: addresses in, verdicts out); `CappedProtocol` applies it to
the connections asyncio accepts, handing everything else to aiohttp's own handler.
"""

import asyncio
import resource
from collections import Counter
from collections.abc import Callable

import structlog

from potluck.kernel.client_address import client_of
from potluck.kernel.key_rates import KeyRates, RatePolicy

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_PER_ADDRESS",
    "CappedProtocol",
    "ConnectionCaps",
    "capped",
    "total_cap",
]

log = structlog.get_logger(__name__)

#: Connections one client address may hold open at once.
MAX_PER_ADDRESS = 512
#: Connections in all, where the process may open enough files (total_cap).
MAX_CONNECTIONS = 4096
#: A refusal is logged a few times a minute per address, with how many came past the rate.
REFUSAL_LOG_RATE = RatePolicy(per_s=1 / 60, burst=3)


def total_cap(open_files_limit: int | None = None) -> int:
    """MAX_CONNECTIONS, or half the process' open-files limit where that is lower: the other
    half stays for the database's and the bus' connections, the logs and the streams' files."""
    if open_files_limit is None:
        open_files_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, open_files_limit // 2))


class ConnectionCaps:
    """Open connections counted per address and in all."""

    def __init__(self, *, per_address: int = MAX_PER_ADDRESS, total: int | None = None) -> None:
        self.per_address = per_address
        self.total = total_cap() if total is None else total
        self._open: Counter[str] = Counter()
        self._count = 0
        self._refusals = KeyRates(REFUSAL_LOG_RATE)

    @property
    def open(self) -> int:
        return self._count

    def admit(self, address: str, now: float) -> bool:
        """Count a new connection from `address` if both caps allow it; else log (sparingly)
        and say no."""
        if self._count < self.total and self._open[address] < self.per_address:
            self._open[address] += 1
            self._count += 1
            return True
        verdict = self._refusals.check(address, now)
        if verdict.allowed or verdict.log:
            log.warning(
                "api.connection_refused",
                remote=address,
                open_from_address=self._open[address],
                open=self._count,
                per_address_cap=self.per_address,
                cap=self.total,
                past_rate_in_a_row=verdict.streak,
            )
        return False

    def release(self, address: str) -> None:
        left = self._open[address] - 1
        if left > 0:
            self._open[address] = left
        else:
            del self._open[address]
        self._count -= 1


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return client_of(str(peer[0])) if isinstance(peer, tuple) and peer else "unknown"


class CappedProtocol(asyncio.Protocol):
    """One accepted connection: counted, then served by a protocol of `factory` (aiohttp's
    request handler), to which every call of the transport is passed on; closed at once,
    with no handler made, if the caps refuse it."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], caps: ConnectionCaps) -> None:
        self.factory = factory
        self.caps = caps
        self.inner: asyncio.Protocol | None = None
        self._address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = _address(transport)
        if not self.caps.admit(address, asyncio.get_running_loop().time()):
            # No answer (writing one is what the cap saves), and no lingering close.
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            else:
                transport.close()
            return
        self._address = address
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self.inner = self.inner, None
        if inner is None:
            return  # refused: no handler was made
        self.caps.release(self._address)
        inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def capped(factory: Callable[[], asyncio.Protocol], caps: ConnectionCaps) -> Callable[[], CappedProtocol]:
    """A protocol factory for `loop.create_server`: `factory`'s protocols behind `caps`."""
    return lambda: CappedProtocol(factory, caps)
