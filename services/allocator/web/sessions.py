"""Signed-in browsers: a random session id in an HttpOnly, SameSite=Strict cookie, and a CSRF token.

The user's bearer token is posted once, by the sign-in form, and never stored
in the browser nor put in a URL: the cookie holds only a random session id,
which maps (in the allocator's memory) to the user's name and to the CSRF
token that every POST form carries. An allocator restart signs everybody out,
which costs a sign-in and keeps nothing secret on disk.

The cookie is always Secure, HttpOnly and SameSite=Strict. Browsers keep a
Secure cookie over https and over plain http to loopback (127.0.0.1, ::1,
localhost: the pool from `potluck up`); anywhere else over plain http they
would drop it, so `can_keep_cookie` lets the sign-in say so instead of
failing silently (and the token would have crossed the network in clear).

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

from aiohttp import web

__all__ = ["COOKIE", "Session", "Sessions", "SessionsFull", "can_keep_cookie"]

COOKIE = "potluck_session"
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


class SessionsFull(Exception):
    """No room for another session: `max_sessions` live ones, none expired."""


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})


def can_keep_cookie(request: web.Request) -> bool:
    """Whether a browser keeps a Secure cookie for this request: https, or http to loopback."""
    return request.secure or (request.url.host or "") in LOOPBACK_HOSTS


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
    ) -> None:
        # Both in sign-in order, oldest first; every session lives as long, so the oldest is
        # also the first to expire.
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._by_owner: dict[str, OrderedDict[str, None]] = {}
        self.max_sessions = max_sessions
        self.per_owner = per_owner
        self.lifetime_s = lifetime_s

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
        """`open` a session and set its cookie on `response` (SessionsFull: no cookie is set)."""
        session_id, session = self.open(user, member=member, operator=operator, token=token)
        response.set_cookie(
            COOKIE,
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
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        return self.get(session_id)

    def end(self, response: web.StreamResponse, request: web.Request) -> None:
        session_id = request.cookies.get(COOKIE)
        if session_id:
            self._drop(session_id)
        response.del_cookie(COOKIE, path="/")
