"""Which local account holds the other end of a loopback connection: what binds a session
opened on loopback to the browser that opened it (sessions.py).

Browsers scope cookies by host, not port, and count plain http to loopback as secure: the
session cookie of http://127.0.0.1:8080 goes to any program listening on another port of
127.0.0.1 once the browser loads a page there, even one another site's link sent it to. On
a machine others log in to, such a program is another person's, and it would replay the
cookie from its own account. A connection over loopback has both ends on this machine, and
Linux lists each end of it, with the account that opened it, in /proc/net/tcp (tcp6 for
IPv6): the allocator reads there whose socket the request came from. A session signed in
from one account's browser then answers only connections of that account. No header or
cookie can claim an account: the kernel says it.

Where the table cannot be read (not Linux; the allocator in a container of its own, whose
network namespace has no client ends in it), `peer_uid` is None and the session stays
unbound, as it was; a session bound at sign-in never falls back to unbound (sessions.py).
"""

import ipaddress
import sys
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

__all__ = ["TABLES", "owner_in", "peer_uid"]

#: Where Linux lists the TCP sockets of this network namespace, IPv4 and IPv6.
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
#: The state column's value for an established connection.
ESTABLISHED = "01"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(hex_address: str) -> Address:
    """An address as the table spells it: 32-bit words, each in the kernel's byte order; an
    IPv4-mapped IPv6 one as its IPv4 address."""
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    address = ipaddress.ip_address(b"".join(words))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _endpoint(text: str) -> tuple[Address, int]:
    hex_address, _, hex_port = text.partition(":")
    return _address(hex_address), int(hex_port, 16)


def _plain(address: str) -> Address:
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def owner_in(lines: Iterable[str], client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid of the established socket whose own end is `client` and whose other end is
    `server`, in the lines of a /proc/net/tcp table; None when none is listed."""
    want_local = (_plain(client[0]), client[1])
    want_remote = (_plain(server[0]), server[1])
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[3] != ESTABLISHED or not fields[0].endswith(":"):
            continue  # the heading, or a socket not connected
        try:
            if _endpoint(fields[1]) == want_local and _endpoint(fields[2]) == want_remote:
                return int(fields[7])
        except ValueError:
            continue
    return None


#: Where a request keeps its peer's account once looked up: its connection does not change, and
#: a live page asks again each time it checks that its session still holds.
_KEPT: web.RequestKey[int | None] = web.RequestKey("potluck_peer_uid")


def peer_uid(request: web.Request) -> int | None:
    """The account whose socket sent `request`, when it came over loopback and the kernel's
    table lists it; None otherwise."""
    if _KEPT not in request:
        request[_KEPT] = _looked_up(request)
    return request[_KEPT]


def _looked_up(request: web.Request) -> int | None:
    transport = request.transport
    if transport is None:
        return None
    peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
    if not (isinstance(peer, tuple) and isinstance(local, tuple)):
        return None  # a Unix socket, or a closed connection
    try:
        if not _plain(str(peer[0])).is_loopback:
            return None
        client, server = (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))
    except (ValueError, IndexError):
        return None
    for table in TABLES:
        try:
            with table.open() as lines:
                uid = owner_in(lines, client, server)
        except OSError:
            continue
        if uid is not None:
            return uid
    return None
