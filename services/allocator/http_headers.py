"""The headers every answer of the allocator carries, whoever wrote it: a handler, a page, a
redirect, a static file, the app's own 404 and 405, and the 400 aiohttp's parser sends itself.

Answers hold a user's allocations, tokens (the registry's) and session pages: no cache, shared
or the browser's, may keep them (`Cache-Control: no-store`); no browser may read one as another
type than it says (`nosniff`), show one inside another site's frame (CSP `frame-ancestors`, and
`X-Frame-Options` for browsers that do not read CSP), load one from another site's page
(`Cross-Origin-Resource-Policy`), nor tell another site which page of the pool linked to it
(`Referrer-Policy`). Pages get their own, wider CSP (web/routes.py); every
other answer, JSON or plain text, runs no script and loads nothing. `Server` names Potluck and
nothing more: aiohttp's own value (`Python/3.11 aiohttp/3.x`) told every client, signed in or
not, which versions to look up advisories for.

aiohttp answers a request its parser cannot read (a header over 8 KiB, a bad request line, a
smuggling attempt) before any route, middleware or `on_response_prepare` hook sees it: its
request has no route, so the app's hooks are not called. `HeadedRequestHandler` adds the
headers there, where aiohttp makes that answer.

Nor has that request a header: aiohttp reads none of a request it refuses, so which name it was
sent to (and so whether it came over https, web/origins.py) is unknown there. A TLS terminator
that passes bytes on (stunnel, haproxy's `mode tcp`) hands the allocator such requests as they
came, and their 400 went back over https without HSTS. Where the pool is served over https
under any name, that answer carries HSTS under every name: a browser ignores it on an answer
over plain http (RFC 6797, 8.1), and on an IP address (8.1.1) such as loopback's.

Nor does that answer quote the request. aiohttp's text repeats the line it could not read
(`Invalid header value char: b'Authorization: Bearer pl_...'`), and which line that is the
sender chooses: a bearer token, or a session cookie that the browser keeps from scripts
(HttpOnly), came back in the body to whoever could read that answer (a proxy's or a TLS
terminator's log of answers, a desynchronised connection's next request). It says the kind of
refusal instead (`BadHttpMethod`, `InvalidHeader`, `LineTooLong`...), as the log does
(http_refusals.py).
"""

import asyncio
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import ERROR
from aiohttp.web_request import BaseRequest

__all__ = ["API_CSP", "HSTS", "SERVER", "HeadedRequestHandler", "add_common_headers", "handler_factory"]

#: What every answer says its server is: not the framework's or the interpreter's version.
SERVER = "potluck"
#: On an answer the browser reached over https (the allocator's own TLS, or its operator's TLS
#: proxy for a configured https public URL, web/origins.py): the browser goes on over https for
#: that name for a year, so a later link or typed name in plain http is never sent in clear
#: (a session cookie, a token posted). Not for subdomains: they are the operator's, not the pool's.
HSTS = "max-age=31536000"
#: An answer that is not a page: no script, nothing loaded, no framing.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
#: On every answer. `same-origin`, not `no-referrer`: under the latter Chromium posts forms with
#: `Origin: null`, which the pages' same-origin check refuses.
COMMON: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # No other site's page may load an answer as an image, script or the like (where the
    # browser's own checks would not stop a side channel from reading it), nor keep a window
    # of the pool's page open onto its own.
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Server": SERVER,
}


def add_common_headers(response: web.StreamResponse, csp: str = API_CSP) -> None:
    """Set the common headers on `response`; a Cache-Control or CSP it has already stays."""
    for name, value in COMMON.items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Content-Security-Policy", csp)


class HeadedRequestHandler(web.RequestHandler):
    """aiohttp's request handler, its own error answers (the parser's 400s, a 500 or 504 no
    handler wrote) carrying the common headers too."""

    __slots__ = ("_hsts",)

    def __init__(self, *args: Any, hsts: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether the parser's own answers carry HSTS (the module's docstring says why).
        self._hsts = hsts

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):  # the parser's refusal: said, not quoted (above)
            message = (
                f"{status} {_phrase(status)}: this is not an HTTP/1.1 request the allocator reads "
                f"({type(exc).__name__}); nothing of it was done"
            )
        response = super().handle_error(request, status, exc, message)
        add_common_headers(response)
        # A request the parser refused is aiohttp's headerless stand-in; one a handler failed
        # on is the app's, whose hook (web/routes.py) knows whether it came over https.
        if self._hsts and request.message is ERROR:
            response.headers["Strict-Transport-Security"] = HSTS
        return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def handler_factory(
    server: web.Server, *, hsts: bool = False, **handler_args: Any
) -> Callable[[], HeadedRequestHandler]:
    """A protocol factory for `server` (AppRunner.server): one handler per connection, made with
    the arguments the runner was given (`AppRunner(app, **handler_args)`); `hsts`: whether the
    pool is served over https under some name, so the parser's answers carry HSTS."""
    return lambda: HeadedRequestHandler(server, loop=asyncio.get_running_loop(), hsts=hsts, **handler_args)
