"""Which image registries sit on a member's own machine or network by their very name.

An allocation's image names the registry a member's engine pulls from, and the engine dials it
from the member's laptop. A registry written as `localhost`, a loopback or a private address is
the member's own machine or network wherever the image runs: pulled anonymously, it would make
the laptop connect to its own services or its LAN on a user's behalf. Such a registry serves a
host only when its member names it, without a wildcard, in `allowed_images`.

Shared by hostd, which refuses the pull (and also resolves names, which only it can do for its
own network: potluck.hostd.local_registries), and the allocator's scheduler, which never places
such an image on a host that would refuse it, so that a request no host would take is refused at
once. Pure.
"""

import contextlib
import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from potluck.contracts.image_reference import InvalidReference, parse_pattern, parse_reference

__all__ = ["host_of", "literally_local", "local_address", "local_registry_of", "named_registries"]


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


def literally_local(registry: str) -> bool:
    """`registry` is on the machine or network of whoever dials it, by its name alone:
    `localhost` or a subdomain of it (RFC 6761), or a local address (`local_address`)."""
    host = host_of(registry).lower()
    return host == "localhost" or host.endswith(".localhost") or local_address(host)


@lru_cache(maxsize=4096)
def local_registry_of(image: str, pool_registry: str | None) -> str | None:
    """The registry of `image` when it is literally local (`literally_local`) and not the pool
    registry at `pool_registry` (which hosts reach with the allocator's token); else None."""
    try:
        registry = parse_reference(image).registry
    except InvalidReference:
        return None
    if registry == pool_registry or not literally_local(registry):
        return None
    return registry
