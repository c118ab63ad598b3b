"""The pool registry's token endpoint: Docker clients trade a user's Potluck token for access.

The registry answers an anonymous request with 401 and this endpoint as its
realm; the client comes here with HTTP Basic credentials (any user name, the
Potluck token as password, as `docker login` sends them) and the scopes it
wants, and gets a short-lived token granting what `registry_access` allows.
"""

import datetime

from aiohttp import BasicAuth, web

from potluck.allocator.pool_registry import PoolRegistry
from potluck.allocator.registry_access import grant_for_user, parse_scopes
from potluck.allocator.users import User
from potluck.kernel.rejections import Rejected

POOL_REGISTRY: web.AppKey[PoolRegistry] = web.AppKey("pool_registry", PoolRegistry)


def pool_registry(request: web.Request) -> PoolRegistry:
    registry = request.app.get(POOL_REGISTRY)
    if registry is None:
        raise Rejected(
            "NO_REGISTRY", "this pool runs no image registry; ask the operator to start one", status=404
        )
    return registry


def _unauthenticated(message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": "UNAUTHENTICATED", "message": message}},
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="potluck registry"'},
    )


def basic_password(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    try:
        return BasicAuth.decode(header).password or None
    except ValueError:
        return None


async def token(request: web.Request, user: User | None) -> web.Response:
    """Answer a token request for `user` (None: the credentials were missing or wrong)."""
    issuer = pool_registry(request).tokens
    if user is None:
        return _unauthenticated(
            "log in with your Potluck token as password, e.g. `potluck image push` does it for you"
        )
    service = request.query.get("service", issuer.service)
    if service != issuer.service:
        raise Rejected(
            "BAD_SERVICE",
            f"this endpoint issues tokens for {issuer.service!r} only",
            field="service",
            status=400,
        )
    granted = [grant_for_user(user.name, scope) for scope in parse_scopes(request.query.getall("scope", []))]
    issued = issuer.issue(user.name, granted)
    issued_at = datetime.datetime.fromtimestamp(issued.issued_at, datetime.UTC).isoformat()
    return web.json_response(
        {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        },
        headers={"Cache-Control": "no-store"},
    )
