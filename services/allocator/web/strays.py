"""What a path that is neither a page, nor the API, nor a health check gets: a person's guess.

The pages live under /web/ (and at /), the API under /v1/. Someone who types or trims a page's
address to `/history` or `/signin` meant the page: they got the API's 401 JSON telling them to
send a bearer token, which no browser has. Now a GET (or HEAD) of a page's address without its
/web/ is sent there (302, not permanent: nothing is cached that a later route would contradict);
any other method, which a form or a script sent, is a 404 naming where the pages are (a POST is
not re-sent elsewhere, least of all a sign-in's token). Anything else is a 404 saying where the
pages and the API are. No answer repeats the path: a link cannot make it say a sentence of its
own. Paths under /v1/ keep the API's answers (401 without a token, a JSON 404 with one).
"""

from aiohttp import web

from potluck.allocator.web.routes import PREFIX

__all__ = ["is_api", "stray"]

#: Where the pages and the API are, for a path that is neither.
NOWHERE = (
    "nothing is at this address: the pool's pages start at / (each under /web/, e.g. "
    "/web/history), the API's paths are under /v1/ (GET /v1/openapi.json describes them)"
)
#: A page's address without its /web/, in a request other than a GET.
UNPREFIXED = (
    "this is a page's address without its /web/: the pool's pages are under /web/ "
    "(this one at /web/ followed by the same path); send the request there"
)


def is_api(path: str) -> bool:
    """Whether `path` is one of the API's (under /v1/), whatever its route."""
    return path == "/v1" or path.startswith("/v1/")


async def stray(request: web.Request) -> web.Response:
    """The answer to a path that is no page, no API path and no health check."""
    path = request.path
    if path == PREFIX.rstrip("/"):
        return _found(request, "/")
    meant = request.clone(rel_url=request.rel_url.with_path(PREFIX.rstrip("/") + path))
    match = await request.app.router.resolve(meant)
    if match.http_exception is None:  # a page's route, for this method
        if request.method in ("GET", "HEAD"):
            return _found(
                request, PREFIX.rstrip("/") + request.rel_url.raw_path, request.rel_url.raw_query_string
            )
        return web.Response(status=404, text=UNPREFIXED)
    if isinstance(match.http_exception, web.HTTPMethodNotAllowed):  # a page's path, another method
        return web.Response(status=404, text=UNPREFIXED)
    return web.Response(status=404, text=NOWHERE)


def _found(request: web.Request, location: str, query: str = "") -> web.Response:
    # A path of our own, never another origin: it starts with one slash and a name.
    return web.Response(status=302, headers={"Location": f"{location}?{query}" if query else location})
