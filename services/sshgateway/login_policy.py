"""What a login to the users' port may cost and present, beyond what asyncssh checks itself.

asyncssh has no bound on the authentication requests one connection sends,
and takes any signature a key can make. Both are the gateway's to hold. The
first two bounds below are held by one wrapper of a connection's packet
processing (`bound_before_login`: the users' port uses both, the hosts' port,
where the gateway is the client, the second):

- Requests per connection (`auth_requests`): OpenSSH's sshd ends a
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

- Messages before login: asyncssh's login timer is a hard deadline (traffic does
  not reset it), but until it fires a connection that never authenticates could
  rekey as often as it liked, each key exchange a key generation and agreement
  on the gateway's one event loop: one asyncssh client rekeying in a loop had 4
  such connections cost the gateway 9% of a core, and the 10 an address may hold
  open many times that, every session waiting behind them. IGNORE and DEBUG
  messages, and unknown ones (answered UNIMPLEMENTED), cost a decryption each,
  as the `none` requests above did. An OpenSSH client sends one KEXINIT,
  NEWKEYS, a service request and EXT_INFO before it logs in (asyncssh's client
  an empty IGNORE before each of its packets too); a connection may send
  `KEY_EXCHANGES_BEFORE_LOGIN` KEXINITs, `MESSAGES_BEFORE_LOGIN` other transport
  messages, and as many IGNOREs and the like beyond one for each other message
  it sends, before it has logged in; the next one ends it. After login all are
  free again: a long session rekeys by volume and time.

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

import asyncssh
from asyncssh.constants import (
    MSG_DEBUG,
    MSG_IGNORE,
    MSG_KEXINIT,
    MSG_UNIMPLEMENTED,
    MSG_USERAUTH_FIRST,
    MSG_USERAUTH_REQUEST,
)
from asyncssh.packet import PacketDecodeError, SSHPacket

from potluck.kernel.ssh_key_strength import weakness

__all__ = [
    "KEY_EXCHANGES_BEFORE_LOGIN",
    "MESSAGES_BEFORE_LOGIN",
    "SIGNATURE_ALGS",
    "auth_requests_allowed",
    "bound_before_login",
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


#: KEXINITs a connection may send before it has logged in: the first, and one rekey.
KEY_EXCHANGES_BEFORE_LOGIN = 2
#: Other transport messages (NEWKEYS, a service request, EXT_INFO) a connection may send before
#: it has logged in; and IGNORE, DEBUG, UNIMPLEMENTED and unknown ones beyond one for each
#: other message it sent (asyncssh's client sends an empty IGNORE before each packet it
#: encrypts: a login from it sends about as many as it sends others).
MESSAGES_BEFORE_LOGIN = 32
_CHATTER = frozenset((MSG_IGNORE, MSG_UNIMPLEMENTED, MSG_DEBUG))


def bound_before_login(
    conn: asyncssh.SSHServerConnection | asyncssh.SSHClientConnection,
    too_many_messages: Callable[[str], None],
    *,
    auth_requests: int | None = None,
    too_many_auth_requests: Callable[[], None] = lambda: None,
    key_exchanges: int = KEY_EXCHANGES_BEFORE_LOGIN,
    messages: int = MESSAGES_BEFORE_LOGIN,
) -> None:
    """Bound what `conn` may send, in one wrapper of its packet processing.

    Until `conn` has logged in, let it send `key_exchanges` KEXINITs, `messages` other
    transport messages, and `messages` IGNORE/DEBUG/UNIMPLEMENTED/unknown ones beyond one for
    each other message (authentication requests included); at the next, call
    `too_many_messages` with why (it ends the connection) and drop it. With `auth_requests`,
    let it send that many authentication requests, before login or after; at the next, call
    `too_many_auth_requests` (which ends the connection) and drop it and any after.

    asyncssh hands every message that is neither a key exchange method's nor a channel's to
    its connection's `process_packet` (unknown types too, which it answers UNIMPLEMENTED; a
    server's authentication requests too, which are outside the USERAUTH range asyncssh
    gives its authentication object): this connection's is wrapped, and counts them."""
    process = conn.process_packet
    seen = {"kexinit": 0, "transport": 0, "chatter": 0, "others": 0, "auth": 0}
    ended: list[str] = []

    def counted(pkttype: int, pktid: int, packet: SSHPacket) -> bool | Awaitable[None]:
        if not getattr(conn, "_auth_complete", False):
            if ended:
                return True  # dropped (not answered UNIMPLEMENTED) while the connection ends
            handled = pkttype in conn._packet_handlers
            if pkttype in _CHATTER or not handled:
                seen["chatter"] += 1
            else:
                seen["others"] += 1
                if pkttype == MSG_KEXINIT:
                    seen["kexinit"] += 1
                elif pkttype < MSG_USERAUTH_FIRST:  # authentication requests (50) too
                    seen["transport"] += 1
            if seen["kexinit"] > key_exchanges:
                ended.append("too many key exchanges before login")
            elif seen["transport"] > messages or seen["chatter"] > seen["others"] + messages:
                ended.append("too many messages before login")
            if ended:
                too_many_messages(ended[0])
                return True
        if pkttype == MSG_USERAUTH_REQUEST and auth_requests is not None:
            seen["auth"] += 1
            if seen["auth"] > auth_requests:
                if seen["auth"] == auth_requests + 1:
                    too_many_auth_requests()
                return True
        return process(pkttype, pktid, packet)

    conn.process_packet = counted  # type: ignore[method-assign]


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
