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
direct way in, always are. Those literal checks are potluck.contracts.registry_locality's, which
the allocator's scheduler shares: it places such an image only on hosts whose members named its
registry, and refuses (422) a request no host would take.
"""

import asyncio
import socket
from collections.abc import Awaitable, Callable

from potluck.contracts.registry_locality import host_of, literally_local, local_address

__all__ = ["Resolver", "local_registry_refusal", "resolve"]

#: host -> the addresses it resolves to; raises OSError when it does not resolve.
Resolver = Callable[[str], Awaitable[list[str]]]


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
    if literally_local(registry):
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
