"""Where browsers reach the pages: loopback, an IP address, or a name the operator serves them
under (`potluck allocator --public-url https://pool.example.org`, behind a TLS proxy say).

Three decisions follow from it, all made here:

- Which Host a page request may name (DNS rebinding). A page of another site whose name its
  owner points at 127.0.0.1 reaches an allocator on loopback as that site: same origin to the
  browser, so it could read what it fetches. Such a request names the other site in its Host
  header. Pages answer only a Host that is an IP literal (no DNS to rebind), `localhost`, or a
  configured public URL's name; any other gets 421 saying which setting to give.
- Which Origin a state-changing form must come from: the request's own origin as the allocator
  sees it (`http://127.0.0.1:8080`) or, under a configured name, that URL's (behind a TLS proxy
  the browser sends `Origin: https://pool.example.org` while the allocator hears plain http).
- Whether the browser's connection is https (for the cookie's `__Host-` prefix and for letting
  a token be posted at all): the request's own scheme, or the configured URL's scheme. The
  allocator never believes `X-Forwarded-Proto`: any client can send it; the operator's setting
  is what says a proxy terminates TLS for that name.

A name with one trailing dot (`localhost.`, `pool.example.org.`) is the same name written fully
qualified (anchored at the DNS root): every resolver answers it as the name without the dot,
and browsers send it as typed. It is answered as that name (it was a 421 that only said to
configure the name already configured); its origin keeps the dot, as the browser's does.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

__all__ = ["PublicUrl", "Site", "parse_public_url"]

#: Names that always mean this machine (browsers resolve them without DNS).
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class PublicUrl:
    scheme: str
    #: host[:port] as a browser sends it in Host: lower case, the scheme's default port left out.
    authority: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"


def parse_public_url(text: str) -> PublicUrl:
    """`https://pool.example.org` (or with a port): ValueError saying what is wrong otherwise."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r} is not an http(s) URL with a host name, e.g. https://pool.example.org")
    if url.user is not None or url.password is not None or url.query_string or url.fragment:
        raise ValueError(f"{text!r} holds more than a scheme, a name and a port")
    if url.path not in ("", "/"):
        raise ValueError(f"{text!r} has a path: the pages are served at the root of their origin")
    host = _unrooted(url.host.lower())  # `pool.example.org.` is the name without its dot (above)
    if ":" in host:  # an IPv6 literal, as Host spells it
        host = f"[{host}]"
    authority = host if url.is_default_port() else f"{host}:{url.port}"
    return PublicUrl(scheme=url.scheme, authority=authority)


def _unrooted(name: str) -> str:
    """`name` without the one trailing dot of a fully qualified name (`localhost.`): the same
    host. Two dots, or a dot alone, name none and stay as they are."""
    return name[:-1] if name.endswith(".") and len(name) > 1 and not name.endswith("..") else name


def _authority_of(request: web.Request) -> str:
    """The request's Host, lower case, its name unrooted: host[:port] as PublicUrl spells it."""
    authority = request.host.lower()
    if authority.startswith("["):  # an IPv6 literal has no name to root
        return authority
    name, colon, port = authority.rpartition(":")
    return f"{_unrooted(name)}:{port}" if colon else _unrooted(authority)


def _host_of(request: web.Request) -> str | None:
    """The host the request's Host header names, lower case and unrooted; None for one no URL
    can hold."""
    try:
        return _unrooted((request.url.host or "").lower())
    except ValueError:
        return None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` spells (an IPv6 one with or without its brackets); None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class Site:
    """The public URLs an operator configured, and the decisions above for one request."""

    def __init__(self, public_urls: Iterable[PublicUrl] = ()) -> None:
        self.by_authority = {u.authority: u for u in public_urls}

    @property
    def https_anywhere(self) -> bool:
        """Whether some configured name serves the pool over https (through its TLS proxy)."""
        return any(u.scheme == "https" for u in self.by_authority.values())

    def named(self, request: web.Request) -> PublicUrl | None:
        """The configured public URL the request's Host names, if any."""
        return self.by_authority.get(_authority_of(request))

    def host_allowed(self, request: web.Request) -> bool:
        """Whether a page may answer a request naming this Host (DNS rebinding, above)."""
        if self.named(request) is not None:
            return True
        host = _host_of(request)
        return host is not None and (host in LOOPBACK_NAMES or _ip(host) is not None)

    def origin_of(self, request: web.Request) -> str:
        """The origin a form of the pages is posted from, as the browser names it."""
        # The Host as the browser sent it (with a trailing dot if it had one): its Origin too.
        named = self.named(request)
        scheme = named.scheme if named is not None else request.scheme
        return f"{scheme}://{request.host.lower()}"

    def https(self, request: web.Request) -> bool:
        """Whether the browser reached the allocator over https (itself, or its TLS proxy)."""
        named = self.named(request)
        return request.secure or (named is not None and named.scheme == "https")

    def loopback(self, request: web.Request) -> bool:
        """Whether the page was opened on a loopback name or address (browsers keep Secure
        cookies there over plain http, and nothing crosses a network)."""
        host = _host_of(request)
        if host is None:
            return False
        address = _ip(host)
        return host in LOOPBACK_NAMES or (address is not None and address.is_loopback)
