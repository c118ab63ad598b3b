"""Signed-in browsers: a random session id in an HttpOnly, SameSite=Strict cookie, and a CSRF token.

The user's bearer token is posted once, by the sign-in form, and never stored
in the browser nor put in a URL: the cookie holds only a random session id,
which maps (in the allocator's memory) to the user's name and to the CSRF
token that every POST form carries. An allocator restart signs everybody out,
which costs a sign-in and keeps nothing secret on disk.

The cookie is always Secure, HttpOnly, SameSite=Strict and Path=/, without a
Domain. Browsers keep a Secure cookie over https and over plain http to loopback
(127.0.0.1, ::1, localhost: the pool from `potluck up`); anywhere else over
plain http they would drop it, so `can_keep_cookie` lets the sign-in say so
instead of failing silently (and the token would have crossed the network in
clear). Over https (the allocator's own, or a TLS proxy's for a name the
operator configured: origins.py) the cookie is `__Host-potluck_session`: the
prefix makes the browser refuse it from any other origin (a sibling subdomain,
plain http on the same name), so nobody can plant a session id of their own
(session fixation) nor read it over http. On plain http to loopback it is
`potluck_session`: the prefix asks for a "secure" page, and browsers disagree
on loopback (Chromium counts http://127.0.0.1 as one, Safari does not), while a
plain Secure cookie is kept there by all of them; on loopback no other origin
can share the name. Each scheme reads only its own cookie.

What neither name can do is bind the cookie to the allocator's port: browsers scope cookies
by host, not port, and on loopback they count plain http as secure. Any program listening
on another port of 127.0.0.1 receives `potluck_session` once the browser loads a page from
it, even one another site's link sent it to (only that first, cross-site request goes
without the Strict cookie; the page's own requests after it carry it). A `__Host-` name or
a distinct loopback name (`potluck.localhost`) changes nothing there: that program answers
under any name. So a session signed in over loopback is bound to the local account whose
socket signed it in (peer.py reads it from the kernel), and `of` refuses it to a connection
of any other account: another person's program on a shared machine replays the cookie in
vain. A program of the same account is not told apart (nothing on a loopback connection
can do that; it could read the browser's cookie store anyway). Where the kernel does not
say, the session is unbound, as sessions over https under a name are, where the cookie goes
only over TLS for that name, which another program cannot serve.

Signing in ends the session the browser held (its cookie's), and signing out
ends it in the allocator, not only in the browser: an old id is worth nothing
from then on.

Sessions are bounded twice, so that no one can sign anyone else out: each
owner (a user, a member's token, the operators' token) keeps at most
`MAX_SESSIONS_PER_OWNER`, their own oldest ending when they pass it; and all
together at most `MAX_SESSIONS`, past which a new sign-in is refused
(`SessionsFull`) rather than ending somebody else's session.
"""

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog
from aiohttp import web

from potluck.allocator.web.origins import Site
from potluck.allocator.web.peer import peer_uid

__all__ = ["COOKIE", "SECURE_COOKIE", "Session", "Sessions", "SessionsFull"]

COOKIE = "potluck_session"
#: Its name over https (the docstring says why the prefix is not used on plain http).
SECURE_COOKIE = "__Host-potluck_session"
#: A session lasts this long after its sign-in; then the user signs in again.
LIFETIME_S = 12 * 3600.0
#: One owner's live sessions: a browser on each of their machines, a few private windows and
#: sign-ins never signed out fit well within it. Past it, their own oldest session ends:
#: signing in again and again costs the one who does it, never another user.
MAX_SESSIONS_PER_OWNER = 20
#: Every live session together (a few hundred bytes each in memory). Full, a new sign-in is
#: refused (503) until sessions expire or end: dropping the oldest instead let one user sign
#: every other out by signing in ten thousand times.
MAX_SESSIONS = 10_000

log = structlog.get_logger(__name__)


class SessionsFull(Exception):
    """No room for another session: `max_sessions` live ones, none expired."""


@dataclass(frozen=True)
class Session:
    #: The user's name; for a member, "member" (members sign in with a token of their hosts).
    user: str
    csrf: str
    expires_at: float
    #: A member's session: the digest of their web token (its hosts are looked up each time).
    member: str | None = None
    #: An operator's session: the digest of the operators' web token it signed in with.
    operator: str | None = None
    #: A user's session: the digest of the token it signed in with (rotating it signs out).
    token: str | None = None
    #: Signed in over loopback: the local account whose browser did (peer.py); only that
    #: account's connections present it. None: signed in otherwise, or the kernel did not say.
    peer_uid: int | None = None

    @property
    def owner(self) -> str:
        """Whose session this is, for the per-owner caps: a user, a member's token, the operators'."""
        if self.member is not None:
            return f"member:{self.member}"
        if self.operator is not None:
            return f"operator:{self.operator}"
        return f"user:{self.user}"

    def csrf_ok(self, sent: str | None) -> bool:
        # `surrogateescape`: whatever the form held is compared as bytes, never an exception.
        return sent is not None and hmac.compare_digest(
            self.csrf.encode(), sent.encode("utf-8", "surrogateescape")
        )


class Sessions:
    """Sessions by id, in memory: at most `per_owner` of one owner's (their oldest ends past it)
    and `max_sessions` in all (a new one is refused past it)."""

    def __init__(
        self,
        *,
        max_sessions: int = MAX_SESSIONS,
        per_owner: int = MAX_SESSIONS_PER_OWNER,
        lifetime_s: float = LIFETIME_S,
        site: Site | None = None,
    ) -> None:
        # Both in sign-in order, oldest first; every session lives as long, so the oldest is
        # also the first to expire.
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._by_owner: dict[str, OrderedDict[str, None]] = {}
        self.max_sessions = max_sessions
        self.per_owner = per_owner
        self.lifetime_s = lifetime_s
        self.site = site or Site()

    def cookie_name(self, request: web.Request) -> str:
        return SECURE_COOKIE if self.site.https(request) else COOKIE

    def can_keep_cookie(self, request: web.Request) -> bool:
        """Whether a browser keeps a Secure cookie for this request: https, or http to loopback."""
        return self.site.https(request) or self.site.loopback(request)

    def __len__(self) -> int:
        return len(self._by_id)

    def count_of(self, owner: str) -> int:
        """How many sessions `owner` holds (expired ones too, until they are dropped)."""
        return len(self._by_owner.get(owner, ()))

    def _drop(self, session_id: str) -> None:
        session = self._by_id.pop(session_id, None)
        if session is None:
            return
        ids = self._by_owner[session.owner]
        del ids[session_id]
        if not ids:
            del self._by_owner[session.owner]

    def _drop_expired(self, now: float) -> None:
        while self._by_id:
            session_id, session = next(iter(self._by_id.items()))
            if session.expires_at >= now:
                return
            self._drop(session_id)

    def open(
        self,
        user: str,
        *,
        member: str | None = None,
        operator: str | None = None,
        token: str | None = None,
        peer_uid: int | None = None,
    ) -> tuple[str, Session]:
        """A new session and its id. The owner's own oldest ends when they pass `per_owner`;
        SessionsFull when `max_sessions` live sessions are left after that."""
        now = time.time()
        session = Session(
            user=user,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + self.lifetime_s,
            member=member,
            operator=operator,
            token=token,
            peer_uid=peer_uid,
        )
        self._drop_expired(now)
        while self.count_of(session.owner) >= self.per_owner:
            self._drop(next(iter(self._by_owner[session.owner])))
        if len(self._by_id) >= self.max_sessions:
            raise SessionsFull(f"{len(self._by_id)} sessions are signed in, the most this allocator keeps")
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = session
        self._by_owner.setdefault(session.owner, OrderedDict())[session_id] = None
        return session_id, session

    def start(
        self,
        response: web.StreamResponse,
        request: web.Request,
        user: str,
        *,
        member: str | None = None,
        operator: str | None = None,
        token: str | None = None,
    ) -> Session:
        """`open` a session and set its cookie on `response` (SessionsFull: no cookie is set).
        The session the request came with, if any, ends first: a sign-in never leaves an older
        id working (another user's, on a shared browser, or one planted before it)."""
        self.drop_of(request)
        session_id, session = self.open(
            user, member=member, operator=operator, token=token, peer_uid=peer_uid(request)
        )
        response.set_cookie(
            self.cookie_name(request),
            session_id,
            httponly=True,
            samesite="Strict",
            secure=True,
            path="/",
            max_age=int(self.lifetime_s),
        )
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session of this id: None when there is none or it expired (then dropped)."""
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires_at < time.time():
            self._drop(session_id)
            return None
        return session

    def of(self, request: web.Request) -> Session | None:
        """The request's live session: None without one, or when it was signed in over loopback
        by another local account than the one this request comes from (its cookie was
        replayed by a program that received it on another port: peer.py)."""
        session_id = request.cookies.get(self.cookie_name(request))
        if not session_id:
            return None
        session = self.get(session_id)
        if session is not None and session.peer_uid is not None and peer_uid(request) != session.peer_uid:
            log.warning("web.session_from_another_account", user=session.user)
            return None
        return session

    def drop_of(self, request: web.Request) -> None:
        """End the request's session in the allocator (its cookie stays in the browser, worthless);
        a session the request may not present (`of`) is left alone."""
        session_id = request.cookies.get(self.cookie_name(request))
        if session_id and self.of(request) is not None:
            self._drop(session_id)

    def end(self, response: web.StreamResponse, request: web.Request) -> None:
        """End the request's session, here and in the browser."""
        self.drop_of(request)
        response.del_cookie(
            self.cookie_name(request), path="/", secure=True, httponly=True, samesite="Strict"
        )
