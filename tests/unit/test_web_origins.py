"""`--public-url` as the allocator reads it (services/allocator/web/origins.py), without a server.

What must hold: a URL is read into the origin and the Host a browser sends for it (lower case,
the scheme's default port left out, an IPv6 literal in brackets); anything but a scheme, a name
and a port (a path, a query, credentials, another scheme, no host) is refused with a message
saying what is wrong. (tests/e2e/test_web_hardening.py checks what the pages do with it.)
"""

import pytest

from potluck.allocator.web.origins import PublicUrl, parse_public_url


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("https://Pool.Example.org", PublicUrl("https", "pool.example.org")),
        ("https://pool.example.org/", PublicUrl("https", "pool.example.org")),
        ("https://pool.example.org:443", PublicUrl("https", "pool.example.org")),
        ("https://pool.example.org:8443", PublicUrl("https", "pool.example.org:8443")),
        ("http://pool.lan:80", PublicUrl("http", "pool.lan")),
        ("http://[::1]:8080", PublicUrl("http", "[::1]:8080")),
        # Fully qualified (the DNS root's dot): the same name, as requests naming it are read.
        ("https://pool.example.org.", PublicUrl("https", "pool.example.org")),
        ("https://pool.example.org.:8443", PublicUrl("https", "pool.example.org:8443")),
    ],
)
def test_a_public_url_is_read_as_browsers_send_its_host(text: str, read: PublicUrl) -> None:
    assert parse_public_url(text) == read
    assert read.origin == f"{read.scheme}://{read.authority}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("https://pool.example.org/potluck", "has a path"),
        ("https://pool.example.org/?a=1", "more than"),
        ("https://ann:secret@pool.example.org", "more than"),
        ("ftp://pool.example.org", "http(s) URL"),
        ("pool.example.org", "http(s) URL"),
        ("https://", "http(s) URL"),
        ("https://pool.example.org:99999", "not a URL"),
    ],
)
def test_anything_but_a_scheme_a_name_and_a_port_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".") as refused:
        parse_public_url(text)
    assert says in str(refused.value)
