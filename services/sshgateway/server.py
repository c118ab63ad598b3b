"""The gateway's two SSH faces: users log in here; hostds connect in here.

Users (`asyncssh.listen`). The login name is an allocation id. Only public-key
authentication exists, and a key is accepted only when it is one of the keys
registered on that allocation (`spec.ssh_keys`); certificates, passwords,
keyboard-interactive, GSS and host-based logins are all refused. An unknown
allocation and a wrong key look the same to the client ("Permission denied
(publickey)"), so strangers learn nothing. A key is refused only by what the
log held when it was offered: before refusing one, a connection has the log
read to its head once (view_refresh.py), so a login made the moment an
allocation is placed is not refused because the view had not folded it yet. Whether the allocation is running
is said after authentication, on the session itself (sessions.py), only to
someone holding one of its keys: "allocation a1 is released: nothing runs
there any more", exit status 255.

Before any of that, `AdmittedListener` admits the TCP connection or closes it
with a line saying why (admission.py: new connections per second and
unauthenticated connections per address, unauthenticated connections in
all); no key exchange is spent on a refused one.

Failed logins (connections that do not authenticate) are rate limited per
source address and per allocation (ratelimit.py): the next attempt is
delayed exponentially, and too many failures lock the source (or, after many
more, the allocation) out for a while, with a banner saying so. An
allocation's failures hold back only keys not registered on it: a key that
is registered on it is let in whatever strangers did to its id. A failure is
counted when it happens (the connection's first refused key), and every key
is checked against the lockout, so parallel connections cannot all guess
while no failure has been counted yet. One connection may offer
`max_keys_per_connection` keys.

One connection may send a bounded number of authentication requests; a login
is signed with a SHA-2 algorithm (no `ssh-rsa`), by a key that is not DSA
nor RSA under 2048 bits (login_policy.py says why); a refused key type or
signature is named in a banner the ssh client prints.

Sessions are capped per connection and per user, and authenticated
connections per user (session_caps.py); a session over its cap is refused
with a message the ssh client prints, a connection over its cap is
disconnected as soon as it has logged in, with one too.

Algorithms (settings.py): only the configured key exchanges, MACs and
ciphers are offered, none of them SHA-1 or NIST curves.

Off, always: agent forwarding, X11 forwarding, TCP/IP and Unix socket
forwarding in both directions (`-L`, `-R`, `-D`), tun/tap. Compression is off
(`compression_algs=None`) and TCP_NODELAY is on (asyncssh sets it on every
TCP connection); line editing is off and data is bytes.

Hosts (`asyncssh.listen_reverse`). Each hostd dials in and runs an SSH
server; the gateway is the client. The host key it presents must be one
logged in a `HostRegistered` event (projection.py): that is how the gateway
knows which host it is. The gateway logs in with its own tunnel key, which
hostd has pinned. Authenticated connections go to the LinkPool, one session
each.
"""

import asyncio
import socket
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import structlog

from potluck.contracts.link import (
    GATEWAY_SSH_VERSION,
    LINK_CIPHERS,
    LINK_KEX_ALGS,
    LINK_MAC_ALGS,
    LINK_SIGNATURE_ALGS,
    limit_reads,
    skip_ignore_packets,
)
from potluck.kernel.client_address import client_of
from potluck.kernel.ssh_bounds import bound_before_login
from potluck.sshgateway.admission import Admission, AdmissionPolicy
from potluck.sshgateway.admitted_listener import ACCEPTED_FROM, AdmittedListener
from potluck.sshgateway.audit import LoginIdentity
from potluck.sshgateway.bridge import Bridge, watch_writes
from potluck.sshgateway.context import GatewayContext
from potluck.sshgateway.login_policy import (
    SIGNATURE_ALGS,
    auth_requests_allowed,
    signature_refusal,
    weak_key_refusal,
)
from potluck.sshgateway.projection import key_blob
from potluck.sshgateway.ratelimit import FailureLimiter, Verdict
from potluck.sshgateway.sessions import GatewaySession
from potluck.sshgateway.settings import TUNNEL_USER

__all__ = ["GatewayServer", "TunnelClient", "listen_for_hosts", "listen_for_users", "user_options"]

log = structlog.get_logger(__name__)

SERVER_VERSION = GATEWAY_SSH_VERSION
#: Refusals of one kind logged per connection; the rest are counted in one line at its end.
_REFUSALS_LOGGED = 3


class Limiters:
    def __init__(self, ctx: GatewayContext, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = FailureLimiter(ctx.settings.source_policy())
        self.alloc = FailureLimiter(ctx.settings.alloc_policy())
        self.clock = clock


class GatewayServer(asyncssh.SSHServer):
    """One user connection: authentication, then sessions."""

    def __init__(self, ctx: GatewayContext, limiters: Limiters) -> None:
        self._ctx = ctx
        self._limiters = limiters
        self._conn: asyncssh.SSHServerConnection | None = None
        self._address = ""
        #: Whom the login limits count: the address, or an IPv6 address's /64 (client_address.py).
        self._client = ""
        self._port = 0
        self._username: str | None = None
        self._locked = False
        self._rejected = 0
        #: Whether this connection has had the log read to its head for a key the view refused.
        self._refreshed = False
        self._key: asyncssh.SSHKey | None = None
        self._authenticated = False
        #: When this connection's failure was counted (None: not yet).
        self._failed_at: float | None = None
        #: Refusals on this connection by kind (log event), the first few of each logged.
        self._refusals: Counter[str] = Counter()
        #: What this connection was told in banners (each said once).
        self._told: set[str] = set()
        #: The bridges of this connection's sessions, and whether its socket is backed up.
        self._bridges: weakref.WeakSet[Bridge] = weakref.WeakSet()
        self._congested = False
        #: Why this connection was ended before login, when the gateway ended it (logged then).
        self._ended_why: str | None = None
        #: Whether the connection has ended (asyncssh has then closed all of its channels).
        self._lost = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._ctx.connections.add(conn)
        limit_reads(conn)
        skip_ignore_packets(conn)
        peer = conn.get_extra_info("peername") or (ACCEPTED_FROM.get(), 0)
        self._address, self._port = str(peer[0]), int(peer[1])
        self._client = client_of(self._address)
        bound_before_login(
            conn,
            self._too_many_messages,
            auth_requests=auth_requests_allowed(self._ctx.settings.max_keys_per_connection),
            too_many_auth_requests=self._too_many_requests,
        )
        self._check_signatures(conn)
        watch_writes(conn, self._congested_writes, self._drained_writes)

    def _congested_writes(self) -> None:
        # The user's client is not reading its socket (whatever window it announced): none of
        # its sessions takes more from its host until it does (bridge.py says why).
        self._congested = True
        for bridge in list(self._bridges):
            bridge.user_link_congested()

    def _drained_writes(self) -> None:
        self._congested = False
        for bridge in list(self._bridges):
            bridge.user_link_drained()

    def _too_many_requests(self) -> None:
        log.info("login.too_many_requests", source=self._address, alloc_id=(self._username or "")[:64])
        if self._conn is not None:
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "potluck: too many authentication attempts"
            )

    def _too_many_messages(self, why: str) -> None:
        self._ended_why = why
        log.info("login.too_many_messages", source=self._address, why=why)
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_PROTOCOL_ERROR, f"potluck: {why}")

    def _check_signatures(self, conn: asyncssh.SSHServerConnection) -> None:
        """Refuse a login signed with an algorithm not in SIGNATURE_ALGS (login_policy.py).

        asyncssh verifies a signature with whatever algorithm the key can make and tells the
        server object only the key: its connection's `validate_public_key`, which sees the
        signature, is called on the connection object, and is wrapped here."""
        validate = conn.validate_public_key

        async def validate_signed(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            refusal = signature_refusal(signature) if msg else None
            if refusal is None:
                return await validate(username, key_data, msg, signature)
            if self._username is None:
                self._username = username
            self._refuse_key(refusal)
            return False

        conn.validate_public_key = validate_signed  # type: ignore[method-assign]

    def _tell(self, message: str) -> None:
        """Say `message` in a banner (once a connection): ssh prints it before "Permission denied"."""
        if message not in self._told and self._conn is not None and not self._authenticated:
            self._told.add(message)
            self._conn.send_auth_banner(f"potluck: {message}\r\n")

    def _refuse_key(self, why: str) -> None:
        """A key (or its signature) refused for what it is, whatever it is registered on."""
        self._tell(why)
        self._rejected += 1
        if self._failed_at is None:
            self._count_failure(why)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for event, count in self._refusals.items():
            if count > _REFUSALS_LOGGED:
                log.info(
                    "connection.refusals_not_logged",
                    refusal=event,
                    count=count - _REFUSALS_LOGGED,
                    source=self._address,
                    alloc_id=(self._username or "")[:64],
                )
        if self._conn is not None:
            self._ctx.connections.discard(self._conn)
            self._ctx.user_connections.give_back(self._conn)
        if self._username is None and self._ended_why is None:
            # Gone before it asked to log in (reset, closed, not SSH, a version line too long,
            # the login time up): one line, or it would leave no trace at INFO.
            version = self._conn.get_extra_info("client_version") if self._conn is not None else None
            log.info(
                "connection.ended_before_login",
                source=self._address,
                client_version=str(version or "")[:64],
                why=_why_ended(exc),
            )
        if self._authenticated or self._username is None or self._failed_at is not None:
            return
        # It offered no key we refused (none at all, or it timed out): a failure all the same.
        self._count_failure("no key accepted before the connection ended")

    def _count_failure(self, why: str) -> None:
        assert self._username is not None
        now = self._limiters.clock()
        self._failed_at = now
        source = self._limiters.source.failed(self._client, now)
        alloc = self._limiters.alloc.failed(self._username, now)
        log.info(
            "login.failed",
            source=self._address,
            alloc_id=self._username[:64],
            why=why,
            locked=self._locked,
            next_delay_s=max(source.delay_s, alloc.delay_s),
            source_locked_for_s=round(source.locked_for_s, 1),
        )

    def _lock_out(self, username: str, source: Verdict, alloc: Verdict) -> None:
        if self._locked:
            return
        self._locked = True
        whom = "from your address" if source.locked else "to this allocation"
        wait = max(source.locked_for_s, alloc.locked_for_s)
        log.warning("login.locked_out", source=self._address, alloc_id=username[:64], wait_s=round(wait))
        if self._conn is not None:
            self._conn.send_auth_banner(
                f"potluck: too many failed logins {whom}; try again in {max(1, round(wait))} s\r\n"
            )

    async def begin_auth(self, username: str) -> bool:
        # Only the source's failures lock out or slow down a login before its key is seen: the
        # allocation's are anyone's (validate_public_key says why they never stop its owner).
        self._username = username
        source = self._limiters.source.check(self._client, self._limiters.clock())
        if source.locked:
            self._lock_out(username, source, Verdict())
            return True
        if source.delay_s > 0:
            log.info("login.delayed", source=self._address, alloc_id=username[:64], delay_s=source.delay_s)
            await asyncio.sleep(source.delay_s)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Whether `key` is one registered on allocation `username`.

        The allocation's failures (its lockout, its delay) hold back only keys that are not
        registered on it. Anyone who knows an allocation's id can fail logins to it from any
        address: when its lockout refused every key, one stranger (as another user) failing
        70 times in 80 s from one address locked the owner out, again and again. A key
        registered on the allocation proves its holder (a signature cannot be guessed), so it
        is let in; the source's own lockout still applies to everyone from that address."""
        if self._username is None:
            # asyncssh calls begin_auth only when the name differs from the one it starts with,
            # the empty one: a login as "" comes here first, and must be counted all the same.
            self._username = username
        if self._locked or self._rejected >= self._ctx.settings.max_keys_per_connection:
            return False
        # Other connections' failures may have locked this source out since begin_auth.
        now = self._limiters.clock()
        source = self._limiters.source.check(self._client, now)
        if source.locked:
            self._lock_out(username, source, Verdict())
            return False
        weak = weak_key_refusal(key)
        if weak is not None:
            self._refuse_key(weak)
            return False
        presented = bytes(key.public_data)
        if self._admits(username, presented):
            self._key = key
            return True
        if not self._refreshed:
            # Once per connection: a user offering several keys is not made to wait for each.
            self._refreshed = True
            if await self._ctx.view_refresh.refresh() and self._admits(username, presented):
                self._key = key
                return True
            now = self._limiters.clock()
        alloc = self._limiters.alloc.check(username, now)
        if alloc.locked:
            self._lock_out(username, source, alloc)
            return False
        self._rejected += 1
        if self._failed_at is None:
            # The connection's first refused key waits for the allocation's earlier failures
            # (once, as begin_auth waits for the source's): a user offering several keys
            # before the right one is not slowed by their own.
            self._count_failure("key refused")
            if alloc.delay_s > 0:
                log.info("login.delayed", source=self._address, alloc_id=username[:64], delay_s=alloc.delay_s)
                await asyncio.sleep(alloc.delay_s)
        return False

    def _admits(self, username: str, presented: bytes) -> bool:
        """Whether the view has allocation `username` with the key `presented` registered on it,
        and its user was not removed."""
        state = self._ctx.view.admitted(username)
        return state is not None and any(key_blob(line) == presented for line in state.spec.ssh_keys)

    def auth_completed(self) -> None:
        self._authenticated = True
        assert self._username is not None
        if self._failed_at is not None:
            # A refused key, then the right one: a user with several keys, not a failure.
            self._limiters.source.forgive(self._address, self._failed_at)
        self._limiters.alloc.succeeded(self._username)
        log.info(
            "login.accepted",
            source=self._address,
            alloc_id=self._username,
            fingerprint=self._key.get_fingerprint() if self._key else "",
        )
        user = self._user()
        refusal = self._ctx.user_connections.take(self._conn, user)
        if refusal is not None and self._conn is not None:
            log.info(
                "connection.refused", source=self._address, alloc_id=self._username, user=user, reason=refusal
            )
            self._conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, f"potluck: {refusal}")

    def _user(self) -> str:
        """Whose connection this is: the allocation's owner (the login name if it has none)."""
        assert self._username is not None
        allocation = self._ctx.view.allocation(self._username)
        return allocation.user if allocation is not None else self._username

    def session_requested(self) -> Awaitable[GatewaySession] | bool:
        if not self._authenticated or self._username is None or self._key is None:
            return False
        # The caps are asked in the task asyncssh starts to finish the open, not here. A client
        # often sends one session's close and the next one's open in one write, and asyncssh
        # frees the closed channel (its session's places given back in connection_lost) in a
        # callback on the loop's next turn; asked here, the open came first and was refused
        # ("this connection has 10 sessions open") for a session the client had seen closed.
        # The task's first step runs after callbacks scheduled before it.
        return self._open_session()

    async def _open_session(self) -> GatewaySession:
        if self._lost:
            # Its channel closed with it; the place would never be given back.
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "SSH connection closed")
        assert self._username is not None
        assert self._key is not None
        user = self._user()
        place = self._ctx.caps.take(self._conn, user)
        if isinstance(place, str):
            self._note_refusal("session.refused", user=user, reason=place)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, f"potluck: {place}")
        session = GatewaySession(
            self._ctx,
            LoginIdentity(
                alloc_id=self._username,
                key_fingerprint=self._key.get_fingerprint("sha256"),
                source_address=self._address,
                source_port=self._port,
            ),
            place,
            env_refused=lambda name: self._note_refusal("env.refused", name=name),
        )
        self._bridges.add(session.bridge)
        if self._congested:
            session.bridge.user_link_congested()
        return session

    def _note_refusal(self, event: str, **fields: object) -> None:
        """Log a refusal on this connection: the first `_REFUSALS_LOGGED` of each kind, then only
        count them (logged when the connection ends). A refusal costs a client a few bytes, and
        one connection asked for 3,000 forwardings a second, each a line of the gateway's log."""
        self._refusals[event] += 1
        if self._refusals[event] <= _REFUSALS_LOGGED:
            log.info(event, source=self._address, alloc_id=self._username, **fields)

    # Forwarding of any kind is refused.

    def _refused(self, what: str) -> asyncssh.ChannelOpenError:
        # What the client named (a host, a socket path) is its own: a few dozen characters do.
        self._note_refusal("forwarding.refused", what=what[:128])
        return asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "potluck: forwarding is disabled on this gateway"
        )

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        raise self._refused(f"direct-tcpip to {dest_host}:{dest_port}")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self._refused(f"tcpip-forward on {listen_host}:{listen_port}")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        raise self._refused(f"direct-streamlocal to {dest_path}")

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refused(f"streamlocal-forward on {listen_path}")
        return False

    def tun_requested(self, unit: int | None) -> bool:
        raise self._refused("tun")

    def tap_requested(self, unit: int | None) -> bool:
        raise self._refused("tap")


def _why_ended(exc: Exception | None) -> str:
    """How a connection ended, in a few words for a log line (the peer chose them: bounded)."""
    if exc is None:
        return "closed"
    said = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
    return f"{type(exc).__name__}: {said}"[:160]


class TunnelClient(asyncssh.SSHClient):
    """The gateway's side of one reverse connection from a hostd."""

    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        self._conn: asyncssh.SSHClientConnection | None = None
        self._peer = ""
        self.host_id: str | None = None
        self._key_blob = b""
        #: Whether a line was logged about this connection before it logged in.
        self._said = False
        self._authenticated = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn
        limit_reads(conn)
        skip_ignore_packets(conn)
        bound_before_login(conn, self._too_many_messages)
        peer = conn.get_extra_info("peername") or (ACCEPTED_FROM.get(), 0)
        self._peer = f"{peer[0]}:{peer[1]}"

    def _too_many_messages(self, why: str) -> None:
        self._said = True
        log.warning("link.too_many_messages", peer=self._peer, why=why)
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_PROTOCOL_ERROR, f"potluck: {why}")

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        host_id = self._ctx.view.host_for_key(bytes(key.public_data))
        if host_id is None:
            self._said = True
            log.warning(
                "link.unknown_host_key",
                peer=self._peer,
                fingerprint=key.get_fingerprint(),
                hint="no registered host has this SSH key "
                "(not registered yet, deregistered, left, revoked, or not a host)",
            )
            return False
        self.host_id = host_id
        self._key_blob = bytes(key.public_data)
        return True

    def auth_completed(self) -> None:
        assert self._conn is not None
        assert self.host_id is not None
        self._authenticated = True
        if self._ctx.view.host_for_key(self._key_blob) != self.host_id:
            # The host was revoked, deregistered or registered another key while this link
            # was authenticating (hostd decides how long that takes): the reaction that closed
            # its links (reactions.py) ran before this one was in the pool.
            log.warning("link.key_no_longer_registered", host_id=self.host_id, peer=self._peer)
            self._conn.close()
            return
        log.debug("link.accepted", host_id=self.host_id, peer=self._peer)
        self._ctx.links.offer(self.host_id, self._conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._ctx.links.discard(self._conn)
        if not self._authenticated and not self._said:
            log.info("link.ended_before_login", peer=self._peer, why=_why_ended(exc))


def _common_options(ctx: GatewayContext) -> dict[str, Any]:
    settings = ctx.settings
    return {
        "compression_algs": None,
        "keepalive_interval": settings.keepalive_interval_s,
        "keepalive_count_max": settings.keepalive_count_max,
        "config": None,
        "gss_kex": False,
        "gss_auth": False,
        "host_based_auth": False,
        "kbdint_auth": False,
        "password_auth": False,
        "x11_forwarding": False,
        "agent_forwarding": False,
        "encoding": None,
    }


def user_options(ctx: GatewayContext, host_key: asyncssh.SSHKey) -> asyncssh.SSHServerConnectionOptions:
    """What every user connection runs with (settings.py says why these algorithms)."""
    settings = ctx.settings
    limiters = Limiters(ctx)
    return asyncssh.SSHServerConnectionOptions(
        server_factory=lambda: GatewayServer(ctx, limiters),
        server_host_keys=[host_key],
        authorized_client_keys=None,
        public_key_auth=True,
        allow_pty=True,
        line_editor=False,
        sftp_factory=None,
        allow_scp=False,
        server_version=SERVER_VERSION,
        # What the gateway announces in server-sig-algs; _check_signatures holds logins to it.
        signature_algs=list(SIGNATURE_ALGS),
        kex_algs=list(settings.kex_algs),
        mac_algs=list(settings.mac_algs),
        encryption_algs=list(settings.ciphers),
        login_timeout=settings.login_timeout_s,
        **_common_options(ctx),
    )


async def listen_for_users(ctx: GatewayContext, host_key: asyncssh.SSHKey) -> AdmittedListener:
    settings = ctx.settings
    admission = Admission(
        AdmissionPolicy(
            rate=settings.source_connections_per_s,
            burst=settings.source_connection_burst,
            max_unauthenticated=settings.max_unauthenticated,
            source_max_unauthenticated=settings.source_max_unauthenticated,
        )
    )
    host, port = settings.listen_address
    options = user_options(ctx, host_key)

    async def serve(sock: socket.socket) -> object:
        return await asyncssh.run_server(sock, options=options)

    return await AdmittedListener.start(ctx, host, port, admission, serve)


async def listen_for_hosts(ctx: GatewayContext, tunnel_key: asyncssh.SSHKey) -> AdmittedListener:
    """The hosts' port: admitted as the users' is (admitted_listener.py says why), then the gateway
    runs the SSH client on each connection, which must have authenticated within
    `login_timeout_s` (asyncssh's `connect_timeout` bounds `run_client`)."""
    settings = ctx.settings
    admission = Admission(
        AdmissionPolicy(
            rate=settings.tunnel_source_connections_per_s,
            burst=settings.tunnel_source_connection_burst,
            max_unauthenticated=settings.tunnel_max_unauthenticated,
            source_max_unauthenticated=settings.tunnel_source_max_unauthenticated,
        )
    )
    options = asyncssh.SSHClientConnectionOptions(
        client_factory=lambda: TunnelClient(ctx),
        # Not None (that would skip the check): an empty list, so that every key goes
        # through TunnelClient.validate_host_public_key, and no known_hosts file is read.
        known_hosts=([], [], []),
        username=TUNNEL_USER,
        client_keys=[tunnel_key],
        agent_path=None,
        preferred_auth="publickey",
        public_key_auth=True,
        encryption_algs=list(LINK_CIPHERS),
        kex_algs=list(LINK_KEX_ALGS),
        mac_algs=list(LINK_MAC_ALGS),
        # The host key types the gateway takes, and what it signs its own login with.
        server_host_key_algs=list(LINK_SIGNATURE_ALGS),
        signature_algs=list(LINK_SIGNATURE_ALGS),
        client_version=GATEWAY_SSH_VERSION,
        connect_timeout=settings.login_timeout_s,
        **_common_options(ctx),
    )

    async def serve(sock: socket.socket) -> object:
        return await asyncssh.run_client(sock, options=options)

    host, port = settings.tunnel_address
    return await AdmittedListener.start(ctx, host, port, admission, serve)
