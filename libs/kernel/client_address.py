"""The client an address stands for, wherever the pool counts clients (caps, rate limits).

One machine or household on IPv6 is given a whole /64 and may send from any address in it
(privacy addresses rotate within it on their own): counted per address, one client would get
a fresh allowance with each address it picks, so the allocator's caps and failure limits and
the SSH gateway's admission and login limits all count an IPv6 client by its /64. An IPv4
address written IPv4-mapped is the IPv4 address.
"""

import ipaddress

__all__ = ["client_of"]


def client_of(address: str | None) -> str:
    """The client `address` stands for, for the caps and the failure limit: an IPv4 address
    itself (also written IPv4-mapped, `::ffff:1.2.3.4`), an IPv6 address's /64, anything
    else as it is."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
