"""Which registries a host's engine may be sent to by a user's image name: none on the member's own
machine or network unless the member names it.

An allocation's image names the registry the engine pulls from, and the engine dials it from the
member's laptop. Pointed at `127.0.0.1:22/x:1`, `192.168.1.1:80/x:1` or a name that resolves
there, a pull would make the laptop connect to its own services or its LAN on a user's behalf
(Docker even speaks plain HTTP to loopback registries), and the pull's error would tell the user
what answered: a port scan of the member's network, run by the member's machine. So an image from
a registry that is not the pool's (which hostd reaches with the allocator's token) is pulled only
if the registry's addresses are all global ones, or the member named that registry, without a
wildcard, in `allowed_images` (a registry on the member's own network, on purpose).

A name that does not resolve here is left to the engine, which resolves it the same way and
fails saying so. The check resolves once before the pull and the engine again, so a name whose
addresses change in between (DNS rebinding) is not caught: loopback and private literals, the
direct way in, always are.
"""

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

from potluck.contracts.image_reference import InvalidReference, parse_pattern

__all__ = ["Resolver", "host_of", "local_address", "local_registry_refusal", "named_registries"]

#: host -> the addresses it resolves to; raises OSError when it does not resolve.
Resolver = Callable[[str], Awaitable[list[str]]]


def named_registries(allowed_images: Iterable[str]) -> frozenset[str]:
    """The registries `allowed_images` names exactly (no `*` or `?` in the registry part)."""
    named: set[str] = set()
    for text in allowed_images:
        with contextlib.suppress(InvalidReference):
            registry = parse_pattern(text).parts.registry
            if "*" not in registry and "?" not in registry:
                named.add(registry)
    return frozenset(named)


def host_of(registry: str) -> str:
    """`registry` without its port: `[::1]:5000` -> `::1`, `example.org:443` -> `example.org`."""
    if registry.startswith("["):
        return registry[1 : registry.find("]")] if "]" in registry else registry[1:]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def local_address(text: str) -> bool:
    """Is `text` an address a packet to which stays on this machine or its networks (loopback,
    private, link-local, shared, unspecified, multicast or reserved)?"""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


#: A resolver that does not answer in this long is treated as one that could not resolve.
RESOLVE_TIMEOUT_S = 5.0


async def resolve(host: str) -> list[str]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise OSError(f"{host} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from exc
    return [str(info[4][0]) for info in infos]


async def local_registry_refusal(
    registry: str, named: frozenset[str], resolver: Resolver = resolve
) -> str | None:
    """Why the engine must not be sent to `registry` for an anonymous pull, or None when it may."""
    if registry in named:
        return None
    host = host_of(registry).lower()
    # `localhost` and its subdomains mean this machine whatever a resolver says (RFC 6761).
    if host == "localhost" or host.endswith(".localhost") or local_address(host):
        where = host
    else:
        try:
            addresses = await resolver(host)
        except OSError:
            return None  # the engine resolves it the same way and says it could not
        where = next((address for address in addresses if local_address(address)), "")
        if not where:
            return None
        where = f"{host} is {where}"
    return (
        f"the registry {registry} is on this host's own machine or network ({where}); a host pulls "
        "from there only images of the pool registry (`potluck image push` puts yours in it), "
        "or of a registry its member names in allowed_images"
    )
