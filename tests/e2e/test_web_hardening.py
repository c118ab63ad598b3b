"""The allocator's HTTP answers and pages against hostile input and hostile pages: headers on
every answer, session cookies and their revocation, live updates carrying a member's text,
query parameters out of bounds, other sites' names (DNS rebinding) and origins, and a TLS proxy
in front (`--public-url`).

One real pool (registry, allocator, one hostd on a private Docker engine) serves the module,
its allocator started as an operator would behind a TLS proxy for https://pool.example.org.
The browser is Debian's Chromium through Playwright, as in test_web.py.
"""

import asyncio
import os
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright

from potluck.contracts.allocation_events import AllocationFailed, alloc_stream
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.ports import free_port
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import start_laptop
from tests.fixtures.browser import CHROMIUM, browser  # noqa: F401 (the fixture, used by name)
from tests.fixtures.pool import Pool, remove_managed_containers
from tests.fixtures.servers import _fresh_database
from tests.fixtures.tls_proxy import tls_proxy, tls_tunnel

#: The name the operator's TLS proxy serves the pool under.
PUBLIC = "pool.example.org"
PUBLIC_ORIGIN = f"https://{PUBLIC}"
#: What every answer must carry, whoever wrote it (services/allocator/http_headers.py).
REQUIRED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Not aiohttp's `Python/3.11 aiohttp/3.x`: no versions to look advisories up for.
    "Server": "potluck",
}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Hardened:
    def __init__(self, pool: Pool, tokens: dict[str, str], proxied: str) -> None:
        self.pool = pool
        #: The pool's page through a real TLS proxy (https://pool.example.org:PORT).
        self.proxied = proxied
        self.tokens = tokens
        self.api = pool.api
        self.port = pool.api_port
        self._shared: dict[str, str] = {}

    async def shared(self, user: str) -> str:
        """An allocation of `user`'s that cases which change nothing share."""
        if user not in self._shared:
            self._shared[user] = await self.allocate(user)
        return self._shared[user]

    async def allocate(self, user: str) -> str:
        """A new allocation of `user`'s, running: the pool records nothing more of it until it
        ends, so a case that reads the log's head afterwards sees only what it does (a full run
        read the head between the POST and the host's report that it runs)."""
        body = {
            "cpus": 0.5,
            "memory": "64M",
            "disk": "64M",
            "image": DEFAULT_TAG,
            "command": ["sleep", "600"],
        }
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{self.api}/v1/allocations", json=body) as r:
                created: dict[str, Any] = await r.json()
                assert r.status in (201, 202), created
            path = f"{self.api}/v1/allocations/{created['id']}"
            async with http.get(path, params={"wait": "running", "timeout": "30"}) as r:
                shown: dict[str, Any] = await r.json()
                assert (r.status, shown.get("state")) == (200, "running"), shown
        return str(created["id"])

    async def head(self) -> int:
        return await self.pool.store.head_position()


@pytest.fixture(scope="module")
async def hardened(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, docker_engines: list[DockerEngine]
) -> AsyncIterator[Hardened]:
    """The pool: one host on the first engine, users alice and bob, and an allocator started for
    https://pool.example.org behind a TLS proxy."""
    database_url = await _fresh_database(postgres_url, f"webhard{os.getpid()}")
    workdir = tmp_path_factory.mktemp("webhard")
    pool = await Pool.create(workdir, database_url)
    proxy_port = free_port()
    try:
        pool.start_registry()
        # The name as the proxy serves it on 443 (the plain-client cases send that Host), and
        # on the port of the test's own TLS proxy (the browser's).
        public = ["--public-url", PUBLIC_ORIGIN, "--public-url", f"{PUBLIC_ORIGIN}:{proxy_port}"]
        pool.start_allocator(options=public)
        tokens = {name: await pool.add_user(name) for name in ("alice", "bob")}
        await start_laptop(pool, docker_engines[0])
        async with tls_proxy(pool.api, PUBLIC, proxy_port, workdir) as proxied:
            yield Hardened(pool, tokens, proxied)
    finally:
        await pool.close()
        remove_managed_containers(docker_engines)


def _cookie_jar() -> aiohttp.DummyCookieJar:
    # Cookies are sent by hand here: each case names the session it means.
    return aiohttp.DummyCookieJar()


async def _sign_in(
    h: Hardened, who: str, *, host: str | None = None, origin: str | None = None, cookie: str | None = None
) -> tuple[int, SimpleCookie, str]:
    """Post the sign-in form: the status, the cookies set and the body."""
    headers = {"Origin": origin or h.api}
    if host is not None:
        headers["Host"] = host
    if cookie is not None:
        headers["Cookie"] = cookie
    async with (
        aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http,
        http.post(
            f"{h.api}/web/signin", data={"token": h.tokens[who]}, headers=headers, allow_redirects=False
        ) as r,
    ):
        jar: SimpleCookie = SimpleCookie()
        for line in r.headers.getall("Set-Cookie", []):
            jar.load(line)
        return r.status, jar, await r.text()


async def _get(h: Hardened, path: str, cookie: str, host: str | None = None) -> tuple[int, str, str]:
    headers = {"Cookie": cookie}
    if host is not None:
        headers["Host"] = host
    async with (
        aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http,
        http.get(f"{h.api}{path}", headers=headers, allow_redirects=False) as r,
    ):
        return r.status, r.headers.get("Location", ""), await r.text()


async def _raw(
    h: Hardened, request: bytes, port: int | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str]]:
    """Send `request` as bytes (what no HTTP client would send), to the allocator or to `port`
    (over TLS with `tls`, as the public name): the status and headers."""
    named = PUBLIC if tls is not None else None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port or h.port, ssl=tls, server_hostname=named
    )
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return status, headers


def _assert_hardened(what: str, status: int, headers: Any) -> None:
    for name, value in REQUIRED.items():
        assert headers.get(name) == value, f"{what} ({status}): {name} is {headers.get(name)!r}"
    assert "frame-ancestors 'none'" in headers.get("Content-Security-Policy", ""), f"{what} ({status})"


async def test_every_answer_carries_the_security_headers_errors_too(hardened: Hardened) -> None:
    """Tried: pages, a redirect, a static file and a missing one, the API's answers, its 400,
    404 and 405, a body too large (413), a page under another site's name (421), and requests
    aiohttp's own parser refuses (a header past 8 KiB, a control character in the request line,
    two Content-Length headers), which no route or middleware sees.
    Must hold: each answer, whatever its status, has X-Frame-Options DENY, nosniff, a
    Referrer-Policy, Cache-Control no-store, a CSP forbidding frames and `Server: potluck`."""
    h = hardened
    auth = {"Authorization": f"Bearer {h.tokens['alice']}"}
    cases: list[tuple[str, str, dict[str, str], bytes | None, int]] = [
        ("GET", "/", {}, None, 303),
        ("GET", "/web/signin", {}, None, 200),
        ("GET", "/web/static/live.js", {}, None, 200),
        ("GET", "/web/static/nothing.js", {}, None, 404),
        ("GET", "/web/nothing", {}, None, 404),
        ("PUT", "/web/signin", {}, None, 405),
        ("POST", "/web/signin", {"Origin": h.api, **FORM}, b"token=" + b"x" * (300 * 1024), 413),
        ("GET", "/web/signin", {"Host": "rebind.example"}, None, 421),
        ("GET", "/healthz", {}, None, 200),
        ("GET", "/v1/pool", auth, None, 200),
        ("GET", "/v1/pool", {}, None, 401),
        ("GET", "/v1/nothing", auth, None, 404),
        ("PATCH", "/v1/pool", auth, None, 405),
        ("GET", "/v1/allocations?timeout=nan", auth, None, 400),
        ("POST", "/v1/allocations", {**auth, "Content-Type": "application/json"}, b"x" * (300 * 1024), 413),
    ]
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        for method, path, headers, body, status in cases:
            async with http.request(
                method, f"{h.api}{path}", headers=headers, data=body, allow_redirects=False
            ) as r:
                assert r.status == status, (method, path, await r.text())
                _assert_hardened(f"{method} {path}", r.status, r.headers)
    host = f"Host: 127.0.0.1:{h.port}\r\n".encode()
    for what, raw in [
        ("a header past 8 KiB", b"GET / HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n"),
        ("a control character in the path", b"GET /\x01 HTTP/1.1\r\n" + host + b"\r\n"),
        (
            "two Content-Length headers",
            b"POST /v1/allocations HTTP/1.1\r\n" + host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        ),
    ]:
        status, headers = await _raw(h, raw)
        assert status == 400, what
        _assert_hardened(what, status, headers)


async def test_session_cookies_are_secure_httponly_strict_and_host_prefixed_over_https(
    hardened: Hardened,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: signing in on 127.0.0.1 over plain http (Chromium, and a plain client), and through
    the operator's TLS proxy (Host pool.example.org, Origin https://pool.example.org).
    Must hold: on loopback the cookie is potluck_session, Secure, HttpOnly, SameSite=Strict,
    Path=/ and without Domain, and Chromium keeps it (the pool page opens); through the proxy
    it is __Host-potluck_session with the same attributes, works under that name only, and the
    loopback cookie's name is not read there (each scheme its own cookie)."""
    h = hardened
    context = await browser.new_context(base_url=h.api)
    page = await context.new_page()
    await page.goto("/web/signin")
    await page.fill("#token", h.tokens["alice"])
    async with page.expect_navigation(wait_until="domcontentloaded"):
        await page.click("button[type=submit]")
    assert page.url == f"{h.api}/", await page.content()
    (kept,) = await context.cookies()
    assert kept["name"] == "potluck_session"
    assert kept["secure"]
    assert kept["httpOnly"]
    assert (kept["sameSite"], kept["path"]) == ("Strict", "/")
    await context.close()

    status, jar, _ = await _sign_in(h, "alice")
    assert status == 303
    plain = jar["potluck_session"]
    assert plain["secure"]
    assert plain["httponly"]
    assert (plain["samesite"], plain["path"]) == ("Strict", "/")
    assert not plain["domain"]

    status, jar, text = await _sign_in(h, "alice", host=PUBLIC, origin=PUBLIC_ORIGIN)
    assert status == 303, text
    assert "potluck_session" not in jar, "over https the cookie has its prefixed name only"
    prefixed = jar["__Host-potluck_session"]
    assert prefixed["secure"]
    assert prefixed["httponly"]
    assert (prefixed["samesite"], prefixed["path"], prefixed["domain"]) == ("Strict", "/", "")
    session = prefixed.value
    assert (await _get(h, "/", f"__Host-potluck_session={session}", host=PUBLIC))[0] == 200
    assert (await _get(h, "/", f"potluck_session={session}", host=PUBLIC))[0] == 303
    assert (await _get(h, "/", f"__Host-potluck_session={session}"))[0] == 303


async def test_signing_in_again_ends_the_old_session_and_signing_out_ends_it_here(hardened: Hardened) -> None:
    """Tried: alice signs in; bob signs in on the same browser (it sends alice's cookie); then
    bob signs out. Must hold: after bob's sign-in alice's session id opens nothing (the
    allocator dropped it, not only the browser), bob's does; after his sign-out his id opens
    nothing either, though a client that kept the cookie sends it again."""
    h = hardened
    _, jar, _ = await _sign_in(h, "alice")
    alice = f"potluck_session={jar['potluck_session'].value}"
    assert (await _get(h, "/", alice))[0] == 200
    _, jar, _ = await _sign_in(h, "bob", cookie=alice)
    bob = f"potluck_session={jar['potluck_session'].value}"
    assert (await _get(h, "/", alice))[:2] == (303, "/web/signin"), "the replaced session must be over"
    status, _, body = await _get(h, "/", bob)
    assert status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', body)
    assert csrf is not None
    async with (
        aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http,
        http.post(
            f"{h.api}/web/signout",
            data={"csrf": csrf.group(1)},
            headers={"Cookie": bob, "Origin": h.api},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 303
        cleared = SimpleCookie()
        cleared.load(r.headers["Set-Cookie"])
        assert cleared["potluck_session"].value == ""
    assert (await _get(h, "/", bob))[:2] == (303, "/web/signin")


#: A member's text as a failure report may carry it: line and paragraph separators (which end a
#: JavaScript string literal in older engines and are line ends to Python), markup that would
#: end a script element, a handler to run, and quotes.
NASTY = "pull failed\u2028on\u2029host </script><script>alert(1)</script><img src=x onerror=alert(2)> \"'`"


async def test_a_members_failure_text_shows_as_it_is_on_the_live_page_and_runs_nothing(
    hardened: Hardened,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: alice opens her waiting allocation's page; its host's failure is then recorded with
    a reason and detail holding U+2028, U+2029, `</script>`, a script and an onerror handler
    (what a member's hostd reports ends in the allocation's reason as it came).
    Must hold: the open page's live part shows `failed` without a reload, its "why it ended"
    reads exactly that text, no dialog opens, no script or image element comes into the part,
    and the browser logs no script error."""
    h = hardened
    alloc_id = await h.allocate("alice")
    context = await browser.new_context(base_url=h.api)
    page = await context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto("/web/signin")
    await page.fill("#token", h.tokens["alice"])
    async with page.expect_navigation(wait_until="domcontentloaded"):
        await page.click("button[type=submit]")
    await page.goto(f"/web/allocations/{alloc_id}")
    await page.locator("[data-live][data-updated]").wait_for(state="attached", timeout=10_000)
    await page.evaluate("window.sameDocument = true")

    failed = AllocationFailed(alloc_id=alloc_id, reason=NASTY, detail=NASTY)
    await h.pool.store.append(alloc_stream(alloc_id), [failed])
    await page.locator("[data-live] .status", has_text="failed").wait_for(timeout=10_000)
    assert await page.evaluate("window.sameDocument === true"), "the live part changes without a reload"
    shown = await page.evaluate(
        """() => [...document.querySelectorAll('[data-live] dt')]
              .filter(dt => dt.textContent === 'why it ended')
              .map(dt => dt.nextElementSibling.textContent)"""
    )
    assert shown == [NASTY]
    assert await page.locator("[data-live] script, [data-live] img").count() == 0
    await asyncio.sleep(0.5)  # time for an injected handler to fire
    assert dialogs == []
    assert errors == []
    await context.close()


@pytest.mark.parametrize(
    "timeout", ["1e-300", "-0", "-0.0", "nan", "inf", "-inf", "1e309", "-1", "300.5", "0.0001", "5e-4"]
)
async def test_a_timeout_out_of_bounds_is_refused_and_changes_nothing(
    hardened: Hardened, timeout: str
) -> None:
    """Tried: `?timeout=` of a long poll spelled as a sign on zero, a value too small for any
    clock, not a number, an infinity, one past the float range, a negative, one past 300 s.
    Must hold: 400 INVALID_FIELD naming `timeout` with a message saying what is allowed,
    at once (no wait), and the log's head does not move."""
    h = hardened
    alloc_id = await h.shared("alice")
    head = await h.head()
    auth = {"Authorization": f"Bearer {h.tokens['alice']}"}
    async with aiohttp.ClientSession() as http:
        for path in (f"/v1/allocations/{alloc_id}", "/v1/jobs/j-0"):
            started = asyncio.get_running_loop().time()
            async with http.get(
                f"{h.api}{path}",
                params={"wait": "running" if "/allocations/" in path else "done", "timeout": timeout},
                headers=auth,
            ) as r:
                body = await r.json()
            assert r.status == 400, (path, timeout, body)
            assert body["error"]["code"] == "INVALID_FIELD"
            assert body["error"]["field"] == "timeout"
            assert "from 0.001 to 300 seconds" in body["error"]["message"]
            assert asyncio.get_running_loop().time() - started < 5
    assert await h.head() == head


async def test_timeouts_in_bounds_and_a_huge_wait(hardened: Hardened) -> None:
    """Tried: `?timeout=` of 0, 0.001 and 0.5 on an allocation; `?wait=` of 100,000
    characters. Must hold: the timeouts answer 200 with the allocation; the
    huge wait is refused (400 naming `wait`) with a message that does not repeat it."""
    h = hardened
    alloc_id = await h.shared("alice")
    auth = {"Authorization": f"Bearer {h.tokens['alice']}"}
    async with aiohttp.ClientSession() as http:
        for timeout in ("0", "0.001", "0.5"):
            url = f"{h.api}/v1/allocations/{alloc_id}?wait=running&timeout={timeout}"
            async with http.get(url, headers=auth) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["id"] == alloc_id
        huge = "x" * 100_000
        async with http.post(
            f"{h.api}/v1/allocations/{alloc_id}?wait={huge}", headers=auth, allow_redirects=False
        ) as r:
            assert r.status in (400, 405)  # too long for the request line, or not this method
        async with http.get(f"{h.api}/v1/allocations/{alloc_id}?wait={'x' * 4000}", headers=auth) as r:
            body = await r.json()
            assert r.status == 400
            assert body["error"]["field"] == "wait"
            assert len(body["error"]["message"]) < 300


@pytest.mark.parametrize("grace", ["1e-300", "0.5", "5e-324", "nan", "inf", "1e309", "-1"])
def test_a_grace_out_of_bounds_is_refused_before_anything_is_read(grace: str) -> None:
    """Tried: `potluck host drain` and `host leave` with a grace too small to mean anything,
    not a number or past any bound, and a config file that does not exist.
    Must hold: exit code 2 with a message about --grace, never about the config: the value is
    refused before anything is read or sent."""
    for command in ("drain", "leave"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "potluck",
                "host",
                command,
                "--config",
                "/nonexistent/hostd.toml",
                "--grace",
                grace,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "--grace" in done.stderr
        assert "nonexistent" not in done.stderr


async def test_pages_refuse_another_sites_name_and_the_api_does_not(hardened: Hardened) -> None:
    """Tried: pages with Host naming another site (what a DNS-rebinding page sends), a sign-in
    posted under it, then loopback names and addresses and the configured public name; in a
    real Chromium, a name resolved to 127.0.0.1 (`--host-resolver-rules`, as a rebinding
    DNS answer would). Must hold: the other name gets 421 saying which setting names it, sets
    no cookie and opens no session; the loopback ones and the public name get the pages; the
    API answers under any name (it reads a bearer token, which no other site's page holds)."""
    h = hardened
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        for host in ("rebind.example", f"rebind.example:{h.port}", "127.0.0.1.nip.io", "localhost.evil"):
            async with http.get(f"{h.api}/", headers={"Host": host}, allow_redirects=False) as r:
                assert r.status == 421, host
                assert "--public-url" in await r.text()
        status, jar, text = await _sign_in(h, "alice", host="rebind.example", origin="http://rebind.example")
        assert status == 421, text
        assert not jar
        for host in (f"127.0.0.1:{h.port}", f"localhost:{h.port}", "[::1]", "127.0.0.2", PUBLIC):
            async with http.get(f"{h.api}/", headers={"Host": host}, allow_redirects=False) as r:
                assert (r.status, r.headers.get("Location")) == (303, "/web/signin"), host
        async with http.get(f"{h.api}/healthz", headers={"Host": "rebind.example"}) as r:
            assert r.status == 200
    async with async_playwright() as playwright:
        rebinding = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--no-proxy-server",
                "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP rebind.example 127.0.0.1",
            ],
        )
        try:
            page = await rebinding.new_page()
            answer = await page.goto(f"http://rebind.example:{h.port}/web/signin")
            assert answer is not None
            assert answer.status == 421
            assert await page.locator("#token").count() == 0
        finally:
            await rebinding.close()


async def test_forms_behind_a_tls_proxy_work_from_its_origin_and_not_from_another(hardened: Hardened) -> None:
    """Tried: through the operator's TLS proxy (Host pool.example.org, the browser's Origin
    https://pool.example.org while the allocator hears plain http), alice signs in and releases
    her allocation by the page's form; then the same release posted with another site's Origin,
    with the public name's Origin over http, and with Sec-Fetch-Site cross-site.
    Must hold: the legitimate sign-in and release succeed (303; the release is recorded); each
    cross-site post is refused (403) and records nothing; a sign-in from another site's Origin
    is refused too."""
    h = hardened
    status, jar, text = await _sign_in(h, "alice", host=PUBLIC, origin="https://evil.example")
    assert status == 403, text
    status, jar, text = await _sign_in(h, "alice", host=PUBLIC, origin=f"http://{PUBLIC}")
    assert status == 403, text
    status, jar, text = await _sign_in(h, "alice", host=PUBLIC, origin=PUBLIC_ORIGIN)
    assert status == 303, text
    cookie = f"__Host-potluck_session={jar['__Host-potluck_session'].value}"
    alloc_id = await h.allocate("alice")
    status, _, body = await _get(h, f"/web/allocations/{alloc_id}", cookie, host=PUBLIC)
    assert status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', body)
    assert csrf is not None
    release = f"{h.api}/web/allocations/{alloc_id}/release"
    form = {"csrf": csrf.group(1)}
    head = await h.head()
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        for origin, fetch_site in (
            ("https://evil.example", "cross-site"),
            (f"http://{PUBLIC}", "same-origin"),
            (PUBLIC_ORIGIN, "cross-site"),
            (h.api, "same-origin"),  # the allocator's own view of itself is not the proxy's origin
        ):
            headers = {"Host": PUBLIC, "Cookie": cookie, "Origin": origin, "Sec-Fetch-Site": fetch_site}
            async with http.post(release, data=form, headers=headers, allow_redirects=False) as r:
                assert r.status == 403, (origin, fetch_site)
        assert await h.head() == head
        headers = {"Host": PUBLIC, "Cookie": cookie, "Origin": PUBLIC_ORIGIN, "Sec-Fetch-Site": "same-origin"}
        async with http.post(release, data=form, headers=headers, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == f"/web/allocations/{alloc_id}"
    types = [r.type for r in await h.pool.store.read_stream(alloc_stream(alloc_id))]
    assert "AllocationReleased" in types


async def test_a_browser_behind_a_tls_proxy_signs_in_follows_live_and_releases(
    hardened: Hardened,
) -> None:
    """Tried: a real Chromium opens the pool through a real TLS proxy (https://pool.example.org,
    resolved to 127.0.0.1 by the browser), signs in, opens alice's allocation, sees its live part,
    and releases it with the page's button; then a page of another origin (served on loopback
    under another name) posts the same release form at the proxy.
    Must hold: the sign-in lands on the pool page with the cookie __Host-potluck_session
    (Secure, HttpOnly, SameSite=Strict, Path=/); the allocation's live part loads through the
    proxy; the release is recorded and its page, back from the form, shows it released; the
    other origin's post releases nothing; no script error."""
    h = hardened
    alloc_id = await h.allocate("alice")
    other_id = await h.allocate("alice")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--no-proxy-server",
                f"--host-resolver-rules=MAP {PUBLIC} 127.0.0.1, MAP elsewhere.example 127.0.0.1",
            ],
        )
        try:
            context = await chromium.new_context(base_url=h.proxied, ignore_https_errors=True)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto("/")
            assert page.url == f"{h.proxied}/web/signin"
            await page.fill("#token", h.tokens["alice"])
            async with page.expect_navigation(wait_until="domcontentloaded"):
                await page.click("button[type=submit]")
            assert page.url == f"{h.proxied}/", await page.content()
            (cookie,) = await context.cookies()
            assert cookie["name"] == "__Host-potluck_session"
            assert cookie["secure"]
            assert cookie["httpOnly"]
            assert (cookie["sameSite"], cookie["path"]) == ("Strict", "/")

            await page.goto(f"/web/allocations/{alloc_id}")
            await page.locator("[data-live][data-updated]").wait_for(state="attached", timeout=10_000)
            async with page.expect_navigation(wait_until="domcontentloaded"):
                await page.click("#release")
            assert page.url == f"{h.proxied}/web/allocations/{alloc_id}", "back on its page, no error"
            await page.locator("[data-live] .status", has_text="released").wait_for(timeout=15_000)
            types = [r.type for r in await h.pool.store.read_stream(alloc_stream(alloc_id))]
            assert "AllocationReleased" in types

            # Another site's page, its form aimed at the pool's release of alice's other allocation.
            attacker = await context.new_page()
            await attacker.route(
                "http://elsewhere.example/",
                lambda route: route.fulfill(
                    content_type="text/html",
                    body=(
                        f'<form id="f" method="post" action="{h.proxied}/web/allocations/{other_id}/release">'
                        '<input name="csrf" value="guess"></form>'
                        "<script>document.getElementById('f').submit()</script>"
                    ),
                ),
            )
            await attacker.goto("http://elsewhere.example/")
            await attacker.wait_for_load_state("domcontentloaded")
            await asyncio.sleep(1)
            types = [r.type for r in await h.pool.store.read_stream(alloc_stream(other_id))]
            assert "AllocationReleased" not in types
            assert errors == []
        finally:
            await chromium.close()


async def test_a_page_parameter_or_form_field_given_twice_is_refused(hardened: Hardened) -> None:
    """Tried: the pool page `?at=` given twice; the sign-in form with two tokens (bob's, then
    alice's); a release form with two CSRF fields. Must hold: each is refused (400) saying which
    name came twice; no session is opened, nothing is released."""
    h = hardened
    _, jar, _ = await _sign_in(h, "alice")
    alice = f"potluck_session={jar['potluck_session'].value}"
    status, _, text = await _get(h, "/?at=1&at=2", alice)
    assert status == 400
    assert "at is given more than once" in text
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        async with http.post(
            f"{h.api}/web/signin",
            data=[("token", h.tokens["bob"]), ("token", h.tokens["alice"])],
            headers={"Origin": h.api},
            allow_redirects=False,
        ) as r:
            assert r.status == 400
            assert "token more than once" in await r.text()
            assert "Set-Cookie" not in r.headers
        alloc_id = await h.allocate("alice")
        _, _, page = await _get(h, f"/web/allocations/{alloc_id}", alice)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        async with http.post(
            f"{h.api}/web/allocations/{alloc_id}/release",
            data=[("csrf", csrf.group(1)), ("csrf", "other")],
            headers={"Origin": h.api, "Cookie": alice},
            allow_redirects=False,
        ) as r:
            assert r.status == 400
    types = [r.type for r in await h.pool.store.read_stream(alloc_stream(alloc_id))]
    assert "AllocationReleased" not in types


async def test_answers_name_no_versions_and_only_https_ones_carry_hsts(hardened: Hardened) -> None:
    """Tried: pages, API answers (200, 401, 404) and a request aiohttp's parser refuses, each on
    127.0.0.1 over plain http, then the same under the public https name (the Host the
    operator's TLS proxy passes on), and once through that real TLS proxy.
    Must hold: `Server` is `potluck` on every answer: before, it was aiohttp's
    `Python/3.11 aiohttp/3.x`, telling anyone which versions to look up advisories for.
    Strict-Transport-Security (a year, no subdomains) is on every answer under the https name,
    pages and API alike, and on none over plain http, where it would pin a loopback allocator
    to an https it does not serve."""
    h = hardened
    auth = {"Authorization": f"Bearer {h.tokens['alice']}"}
    cases: list[tuple[str, dict[str, str], int]] = [
        ("/", {}, 303),
        ("/web/signin", {}, 200),
        ("/healthz", {}, 200),
        ("/v1/pool", auth, 200),
        ("/v1/pool", {}, 401),
        ("/v1/nothing", auth, 404),
    ]
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        for host, hsts in ((None, None), (PUBLIC, "max-age=31536000")):
            for path, headers, status in cases:
                named = {**headers, "Host": host} if host is not None else headers
                async with http.get(f"{h.api}{path}", headers=named, allow_redirects=False) as r:
                    assert r.status == status, (host, path)
                    assert r.headers.get("Server") == "potluck", (host, path, r.headers.get("Server"))
                    assert r.headers.get("Strict-Transport-Security") == hsts, (host, path)
        # The proxy's name resolves nowhere here: its port on loopback, its name in SNI and Host.
        port = h.proxied.rsplit(":", 1)[1]
        async with http.get(
            f"https://127.0.0.1:{port}/web/signin",
            headers={"Host": f"{PUBLIC}:{port}"},
            server_hostname=PUBLIC,
            ssl=False,
            allow_redirects=False,
        ) as r:
            assert r.status == 200
            assert r.headers.get("Strict-Transport-Security") == "max-age=31536000"
    status, headers = await _raw(h, f"GET /\x01 HTTP/1.1\r\nHost: 127.0.0.1:{h.port}\r\n\r\n".encode())
    assert status == 400
    assert headers.get("Server") == "potluck"


async def test_a_request_no_parser_reads_gets_hsts_over_a_tls_tunnel(
    hardened: Hardened, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tried: through a real TLS tunnel that passes bytes on unread (as stunnel or haproxy's
    `mode tcp` does) to the allocator, which serves https://pool.example.org: requests aiohttp's
    parser refuses (a control byte in the path, a header past 8 KB, a bare LF), then a good one
    under the public name; and the refused ones straight to the allocator over plain http.
    Must hold: each refusal over TLS is a 400 carrying Strict-Transport-Security (a year) and
    the common headers: before, the parser's 400 went back over https without it, since aiohttp
    reads no Host of a request it refuses and the app's hooks never see it. The good one carries
    it as every page does. Over plain http the refusals carry it too (nothing tells them apart
    there); a browser ignores it on an answer over http (RFC 6797, 8.1)."""
    h = hardened
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the tunnel's certificate is self-signed, made for this test
    refused = [
        f"GET /\x01 HTTP/1.1\r\nHost: {PUBLIC}\r\n\r\n".encode(),
        f"GET /web/signin HTTP/1.1\r\nHost: {PUBLIC}\r\nX-Pad: {'p' * 9000}\r\n\r\n".encode(),
        f"GET /web/signin HTTP/1.1\nHost: {PUBLIC}\n\n".encode(),
    ]
    port = free_port()
    async with tls_tunnel(h.port, PUBLIC, port, tmp_path_factory.mktemp("tunnel")):
        for request in refused:
            status, headers = await _raw(h, request, port=port, tls=tls)
            assert status == 400, request[:40]
            assert headers.get("Strict-Transport-Security") == "max-age=31536000", (request[:40], headers)
            assert headers.get("Server") == "potluck", request[:40]
            assert headers.get("X-Content-Type-Options") == "nosniff", request[:40]
        good = f"GET /web/signin HTTP/1.1\r\nHost: {PUBLIC}\r\nConnection: close\r\n\r\n".encode()
        status, headers = await _raw(h, good, port=port, tls=tls)
        assert status == 200
        assert headers.get("Strict-Transport-Security") == "max-age=31536000"
    for request in refused:
        status, headers = await _raw(h, request)
        assert status == 400
        assert headers.get("Strict-Transport-Security") == "max-age=31536000", request[:40]


async def test_a_pages_address_without_web_leads_to_the_page_and_the_api_keeps_its_401(
    hardened: Hardened,
) -> None:
    """Tried: pages' addresses typed without their /web/ (`/history`, `/signin?next=x`, an
    allocation's, HEAD `/mine`, `/web` alone), a sign-in form posted to `/signin`, addresses
    that are nothing's (`/nothing`, `/openapi.json`, one spelling a sentence, `//other.example/
    history`), each without and with a bearer token; then API paths that are nothing's.
    Must hold: a GET or HEAD of a page's address is a 302 to the same address under /web/
    (query kept); the posted form is a 404 saying the pages are under /web/, with no session
    set; the rest a 404 saying where the pages and the API are, which repeats no part of the
    path, token or not (before, each was the API's 401 JSON asking a browser for a bearer
    token), in the API's JSON (NOT_FOUND) for a request with a token, which is an API client's
    at a wrong base URL (`potluck login` says so from that code); every one carries the
    common headers; /v1/ paths keep the API's 401 and JSON 404."""
    h = hardened
    auth = {"Authorization": f"Bearer {h.tokens['alice']}"}
    alloc_id = await h.shared("alice")
    moved = [
        ("GET", "/history", "/web/history"),
        ("GET", "/signin?next=x", "/web/signin?next=x"),
        ("GET", f"/allocations/{alloc_id}", f"/web/allocations/{alloc_id}"),
        ("HEAD", "/mine", "/web/mine"),
        ("GET", "/web", "/"),
    ]
    nothing = [
        "/nothing",
        "/openapi.json",
        "/your-session-expired-sign-in-at-evil",
        "//other.example/history",
    ]
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        for headers in ({}, auth):
            for method, path, location in moved:
                async with http.request(
                    method, f"{h.api}{path}", headers=headers, allow_redirects=False
                ) as r:
                    assert (r.status, r.headers.get("Location")) == (302, location), (method, path)
                    _assert_hardened(f"{method} {path}", r.status, r.headers)
            for path in nothing:
                async with http.get(f"{h.api}{path}", headers=headers, allow_redirects=False) as r:
                    assert r.status == 404, path
                    if headers:  # an API client at a wrong base URL: the API's JSON NOT_FOUND
                        assert r.content_type == "application/json", path
                        said = (await r.json())["error"]
                        assert said["code"] == "NOT_FOUND", said
                        text = said["message"]
                    else:
                        assert r.content_type == "text/plain", path
                        text = await r.text()
                    assert "pages start at /" in text, text
                    assert "/v1/" in text, text
                    assert "evil" not in text, text
                    assert "other.example" not in text, text
                    _assert_hardened(f"GET {path}", r.status, r.headers)
        async with http.post(
            f"{h.api}/signin",
            data={"token": h.tokens["alice"]},
            headers={"Origin": h.api},
            allow_redirects=False,
        ) as r:
            text = await r.text()
            assert r.status == 404, text
            assert "under /web/" in text, text
            assert "Set-Cookie" not in r.headers
        for headers, status in (({}, 401), (auth, 404)):
            async with http.get(f"{h.api}/v1/nothing", headers=headers) as r:
                assert r.status == status
                assert r.content_type == "application/json"
        async with http.get(f"{h.api}/v1/history") as r:
            assert (r.status, (await r.json())["error"]["code"]) == (401, "UNAUTHENTICATED")


async def test_a_name_with_its_root_dot_is_the_name_without_it(hardened: Hardened) -> None:
    """Tried: the pages under `localhost.`, `127.0.0.1.` and the public name with its trailing
    dot (the same hosts, written fully qualified), then a sign-in through the public name with
    the dot, its form posted from that origin and from the origin without the dot; and names
    that are not the pool's with a dot (`rebind.example.`, `localhost..`, `.`).
    Must hold: the dotted names get the pages (before, 421 saying to configure the very name
    configured); the sign-in from the dotted origin opens a __Host- session that opens the
    pool page under that name, the one from the undotted origin (another origin to a browser)
    is refused; the other names still get 421."""
    h = hardened
    async with aiohttp.ClientSession(cookie_jar=_cookie_jar()) as http:
        for host in (f"localhost.:{h.port}", "localhost.", "127.0.0.1.", f"{PUBLIC}.", f"{PUBLIC.upper()}."):
            async with http.get(f"{h.api}/", headers={"Host": host}, allow_redirects=False) as r:
                assert (r.status, r.headers.get("Location")) == (303, "/web/signin"), host
        for host in ("rebind.example.", "localhost..", ".", "localhost.evil."):
            async with http.get(f"{h.api}/", headers={"Host": host}, allow_redirects=False) as r:
                assert r.status == 421, host
    status, jar, text = await _sign_in(h, "alice", host=f"{PUBLIC}.", origin=PUBLIC_ORIGIN)
    assert status == 403, text
    status, jar, text = await _sign_in(h, "alice", host=f"{PUBLIC}.", origin=f"{PUBLIC_ORIGIN}.")
    assert status == 303, text
    cookie = f"__Host-potluck_session={jar['__Host-potluck_session'].value}"
    status, _, page = await _get(h, "/", cookie, host=f"{PUBLIC}.")
    assert status == 200, page
