"""What an SSH connection may send before it has logged in, and how many authentication
requests: one wrapper of asyncssh's packet processing (`bound_before_login`), used by the
gateway's users' port (both bounds), its hosts' port (where it is the client: the messages)
and hostd's end of the link (both: whoever answers at a gateway's address can try).

- Requests per connection (`auth_requests`): OpenSSH's sshd ends a
  connection after MaxAuthTries failures; asyncssh answers every request, and
  a request that arrives while the last one is still being checked cancels
  that one, so a client need not even wait for the answers. One connection
  that sent `userauth` requests as fast as it could kept the gateway's one
  event loop at 87% of a core for its whole login time (a public key
  registered on an allocation with a bad signature: a verification each), or
  at 47% (the `none` method: the packet's decryption alone), and every
  session on the gateway waited behind it. The gateway lets a user's
  connection send enough requests for an OpenSSH client trying each key it
  may offer twice (sshgateway.login_policy.auth_requests_allowed), hostd lets
  the gateway's send `LINK_AUTH_REQUESTS` (it has one key); the next one ends
  it, with the reason OpenSSH gives.

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

Measured on the gateway; hostd's link server runs on the member's machine, whose event loop
carries every session of it, and is reached by whoever answers at the gateway's address.
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
from asyncssh.packet import SSHPacket

__all__ = ["KEY_EXCHANGES_BEFORE_LOGIN", "LINK_AUTH_REQUESTS", "MESSAGES_BEFORE_LOGIN", "bound_before_login"]

#: Authentication requests hostd takes from a gateway: `none`, then its one key queried and
#: signed, twice over.
LINK_AUTH_REQUESTS = 6


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
