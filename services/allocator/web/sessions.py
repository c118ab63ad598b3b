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
"""

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

__all__ = ["COOKIE", "Session", "Sessions", "can_keep_cookie"]

COOKIE = "potluck_session"
#: A session lasts this long after its sign-in; then the user signs in again.
LIFETIME_S = 12 * 3600.0


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

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf.encode(), sent.encode())


class Sessions:
    """Sessions by id, in memory, the oldest dropped past `max_sessions`."""

    def __init__(self, *, max_sessions: int = 10_000, lifetime_s: float = LIFETIME_S) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self.max_sessions = max_sessions
        self.lifetime_s = lifetime_s

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
        session_id = secrets.token_urlsafe(32)
        session = Session(
            user=user,
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self.lifetime_s,
            member=member,
            operator=operator,
            token=token,
        )
        self._by_id[session_id] = session
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
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

    def of(self, request: web.Request) -> Session | None:
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires_at < time.time():
            del self._by_id[session_id]
            return None
        return session

    def end(self, response: web.StreamResponse, request: web.Request) -> None:
        session_id = request.cookies.get(COOKIE)
        if session_id:
            self._by_id.pop(session_id, None)
        response.del_cookie(COOKIE, path="/")
