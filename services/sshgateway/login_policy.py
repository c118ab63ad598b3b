"""What a login to the users' port may cost and present, beyond what asyncssh checks itself.

asyncssh has no bound on the authentication requests one connection sends,
and takes any signature a key can make. Both are the gateway's to hold:

- Requests per connection (`count_auth_requests`): OpenSSH's sshd ends a
  connection after MaxAuthTries failures; asyncssh answers every request, and
  a request that arrives while the last one is still being checked cancels
  that one, so a client need not even wait for the answers. One connection
  that sent `userauth` requests as fast as it could kept the gateway's one
  event loop at 87% of a core for its whole login time (a public key
  registered on an allocation with a bad signature: a verification each), or
  at 47% (the `none` method: the packet's decryption alone), and every
  session on the gateway waited behind it. A connection may send
  `auth_requests_allowed(max_keys)` requests, enough for an OpenSSH client
  trying each key it may offer twice (a query, then the signed request); the
  next one ends it, with the reason OpenSSH gives.

- Signatures and keys (`signature_refusal`, `weak_key_refusal`): a login is
  signed with one of `SIGNATURE_ALGS`, the algorithms OpenSSH's sshd accepts
  by default: not `ssh-rsa` (RSA with SHA-1, off in OpenSSH since 8.8), nor
  DSA keys, nor RSA keys under 2048 bits (potluck.kernel.ssh_key_strength,
  the rule the allocator holds new allocations' keys to). The gateway
  advertised `ssh-rsa` and `ssh-dss` in its `server-sig-algs` and verified
  either, and so admitted a key that was registered on an allocation whatever
  its type or size.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from asyncssh.constants import MSG_USERAUTH_REQUEST
from asyncssh.packet import PacketDecodeError, SSHPacket

from potluck.kernel.ssh_key_strength import weakness

__all__ = [
    "SIGNATURE_ALGS",
    "auth_requests_allowed",
    "count_auth_requests",
    "signature_algorithm",
    "signature_refusal",
    "weak_key_refusal",
]

#: Signature algorithms a user's login may be signed with (OpenSSH's PubkeyAcceptedAlgorithms
#: without the certificates, which the gateway refuses anyway).
SIGNATURE_ALGS = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


def auth_requests_allowed(max_keys: int) -> int:
    """Authentication requests one connection may send: `none` first, then each of `max_keys`
    keys queried and then signed, and the same again for the key that is let in."""
    return 2 * max_keys + 3


def count_auth_requests(
    conn: asyncssh.SSHServerConnection, allowed: int, exceeded: Callable[[], None]
) -> None:
    """Let `conn` take `allowed` authentication requests; at the next, call `exceeded` (which
    ends the connection) instead of handling it.

    asyncssh hands each packet to the handler its connection's `_packet_handlers` table names
    for the packet's type, read from the connection object: this connection gets its own
    table, the same but for the authentication request, which is counted first."""
    table = dict(conn._packet_handlers)
    handle = table[MSG_USERAUTH_REQUEST]
    seen = 0

    def counted(owner: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Awaitable[None] | None:
        nonlocal seen
        seen += 1
        if seen > allowed:
            if seen == allowed + 1:
                exceeded()
            return None
        return handle(owner, pkttype, pktid, packet)

    table[MSG_USERAUTH_REQUEST] = counted
    conn._packet_handlers = table


def signature_algorithm(signature: bytes) -> str:
    """The algorithm an SSH signature names (its first string), or "" if it names none."""
    try:
        return SSHPacket(signature).get_string().decode("ascii", "replace")
    except PacketDecodeError:
        return ""


def signature_refusal(signature: bytes) -> str | None:
    """Why a login signed so is refused, or None."""
    algorithm = signature_algorithm(signature)
    if algorithm in SIGNATURE_ALGS:
        return None
    if algorithm == "ssh-rsa":
        return "RSA signatures with SHA-1 (ssh-rsa) are refused; OpenSSH 7.2 or later signs with SHA-2"
    return f"signatures of type {algorithm[:64]!r} are refused"


def weak_key_refusal(key: asyncssh.SSHKey) -> str | None:
    """Why `key` is too weak to log in with (potluck.kernel.ssh_key_strength), or None."""
    why = weakness(bytes(key.public_data))
    return None if why is None else f"{why}; register an ed25519 key on the allocation"
