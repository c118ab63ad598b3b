"""NATS server URLs as operators and members write them: one server, or a cluster's nodes.

Kept here, with nothing but the standard library, so that hostd's configuration can check
its setting without loading the bus library.
"""

#: The schemes a NATS server's URL may have.
NATS_SCHEMES = ("nats://", "tls://")


def nats_servers(url: str) -> list[str]:
    """The servers a NATS URL names: one URL, or a comma-separated list of a cluster's nodes
    (a client connects to any of them and fails over to the others).

    Raises ValueError saying which entry is wrong, so a bad setting fails at start.
    """
    servers = [part.strip() for part in url.split(",")]
    if not any(servers):
        raise ValueError("no NATS server given: use nats://host:4222, or several separated by commas")
    for server in servers:
        if not server:
            raise ValueError(f"empty entry in the NATS server list {url!r}: remove the extra comma")
        if not server.startswith(NATS_SCHEMES):
            raise ValueError(
                f"NATS server {server!r} must start with nats:// or tls:// (e.g. nats://host:4222)"
            )
    return servers
