"""What of a failure's detail leaves the member's machine: its own addresses taken out.

A failure's detail goes into the log, where the allocation's user reads it. Much of it is the
engine's own text, which names whatever the engine met on the way: `lookup reg.example on
10.255.255.53:53: no such host` tells the user the address of the member's DNS resolver, and a
connection's error the address it went out from. Addresses on the member's own machine or
network (`local_address`: loopback, private, link-local ...) are replaced by a placeholder;
global ones (a registry's) stay, as the user can look those up anyway, and so does the address
of the registry the user's own image names (a member may allow a registry on their network);
a failed pull also keeps the pool registry's and the allocator's words (image_pull.py decides,
knowing which words are whose). hostd's own log keeps the detail whole, for the member.
"""

import re
from collections.abc import Collection

from potluck.contracts.image_reference import InvalidReference, parse_reference
from potluck.contracts.registry_locality import host_of, local_address

__all__ = ["MEMBERS_ADDRESS", "named_by", "without_local_addresses"]

MEMBERS_ADDRESS = "<an address on the member's network>"

# Candidates only, each checked by `local_address` (ipaddress): dotted quads, and anything of
# hex digits and colons with two colons or more (IPv6, bracketed or not, with a zone).
_CANDIDATE = re.compile(
    r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%[\w.-]+)?)(?![\w.])"
)


def without_local_addresses(detail: str, *, named: Collection[str] = ()) -> str:
    """`detail` with every address of the member's own machine or network replaced, but those
    the user `named` (the host part of their image's registry)."""

    def shared(match: re.Match[str]) -> str:
        address = match.group(0)
        return MEMBERS_ADDRESS if local_address(address) and address not in named else address

    return _CANDIDATE.sub(shared, detail)


def named_by(image: str) -> tuple[str, ...]:
    """The address the user wrote as `image`'s registry, if any (`127.0.0.1:5000/x:1` ->
    `127.0.0.1`): the user knows it, so it stays in what they read."""
    try:
        return (host_of(parse_reference(image).registry),)
    except InvalidReference:
        return ()
