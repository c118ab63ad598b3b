"""The web pages in a real Chromium (Playwright), against one real pool of two hosts for the module.

One pool and one browser serve every test here: the pages only read the
allocator's fold and post through its engine, so the tests share them and
stay within a few seconds each.
"""

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats.errors
import pytest
from playwright.async_api import Browser, Page

from potluck.allocator.members import new_member_token
from potluck.allocator.users import User, rotate_token, token_hash
from potluck.contracts.allocation_events import (
    AllocationReleased,
    AllocationRequested,
    AllocationSpec,
    Quota,
    alloc_stream,
    user_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.member_events import MemberTokenIssued, member_stream
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.browser import browser  # noqa: F401 (the fixture, used by name)
from tests.fixtures.pool import EnrolledHost, Pool, remove_managed_containers
from tests.fixtures.servers import _fresh_database

#: Set to a folder (`POTLUCK_SCREENSHOTS=docs/screenshots`, the README's picture is
#: pool.png there) to keep the pages' screenshots; otherwise they go to the run's temporary
#: folder, so that running the tests leaves the checkout as it was.
SCREENSHOTS_ENV = "POTLUCK_SCREENSHOTS"
XSS = "<img src=x onerror=alert(1)>"


class WebPool:
    def __init__(
        self,
        pool: Pool,
        tokens: dict[str, str],
        hosts: dict[str, str],
        enrolled: dict[str, EnrolledHost],
        shots: Path,
    ) -> None:
        self.pool = pool
        self.shots = shots  # where the screenshots go (SCREENSHOTS_ENV)
        self.tokens = tokens
        self.hosts = hosts  # name -> host id
        self.enrolled = enrolled  # host id -> its enrollment (credentials)

    async def allocate(
        self, user: str, command: tuple[str, ...] = ("sleep", "600"), keep_for: int | None = None
    ) -> str:
        body: dict[str, Any] = {
            "cpus": 0.5,
            "memory": "64M",
            "disk": "64M",
            "image": DEFAULT_TAG,
            "command": list(command),
        }
        if keep_for is not None:
            body["keep_for"] = keep_for
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.pool.api}/v1/allocations", json=body, headers=headers) as r,
        ):
            created: dict[str, Any] = await r.json()
            assert r.status in (201, 202), created
        return str(created["id"])

    async def event_types(self, alloc_id: str) -> list[str]:
        return [r.type for r in await self.pool.store.read_stream(alloc_stream(alloc_id))]

    async def signed_in(self, browser: Browser, user: str, landing: str = "/") -> Page:  # noqa: F811
        context = await browser.new_context(base_url=self.pool.api)
        page = await context.new_page()
        await page.goto("/")
        assert page.url.endswith("/web/signin"), "the pool page must ask for a sign-in first"
        await page.screenshot(path=str(self.shots / "signin.png"))
        await page.fill("#token", self.tokens[user])
        async with page.expect_navigation(wait_until="domcontentloaded"):
            await page.click("button[type=submit]")
        assert page.url == f"{self.pool.api}{landing}", await page.content()
        return page


@pytest.fixture(scope="module")
async def web_pool(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, docker_engines: list[DockerEngine]
) -> AsyncIterator[WebPool]:
    """Two hosts on the two engines, one labelled with markup; users alice and bob."""
    database_url = await _fresh_database(postgres_url, f"web{os.getpid()}")
    pool = await Pool.create(tmp_path_factory.mktemp("web"), database_url, liveness=(0.5, 6, 10.0))
    try:
        pool.start_registry()
        pool.start_allocator()
        tokens = {name: await pool.add_user(name) for name in ("alice", "bob")}
        tokens["member"] = new_member_token()
        hosts = {}
        enrolled = {}
        for name, engine, labels in (
            ("desk", docker_engines[0], {"room": "study"}),
            ("laptop", docker_engines[1], {"note": XSS}),
        ):
            host = await pool.enroll(name)
            pool.write_config(host, engine, labels=labels)
            pool.start_hostd(host)
            hosts[name] = host.host_id
            enrolled[host.host_id] = host
        # What `potluck ops hosts enroll` records beside the credentials: desk's member's token.
        issued = MemberTokenIssued(token_sha256=token_hash(tokens["member"]), host_ids=[hosts["desk"]])
        await pool.store.append(member_stream(hosts["desk"]), [issued])
        for host_id in hosts.values():
            await pool.wait_for_host(host_id, "active")
            await pool.wait_for_images(host_id)
        await pool.wait_api()
        shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.mktemp("screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        yield WebPool(pool, tokens, hosts, enrolled, shots)
    finally:
        await pool.close()
        remove_managed_containers(docker_engines)


async def test_pool_page_is_live_and_escapes_labels(web_pool: WebPool, browser: Browser) -> None:  # noqa: F811
    """Tried: alice signs in and opens the pool page; an allocation of hers is made through the API;
    then the page at the log position before it, and the day's history.
    Must hold: both hosts show with a CPU, memory and disk bar each; the label holding markup shows as
    text and fires no dialog; the new allocation appears on the open page within 2 s, no reload;
    `?at=` the earlier position shows both hosts without it; the history has its two plots."""
    page = await web_pool.signed_in(browser, "alice")
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    errors: list[str] = []  # a CSP violation (an inline script or style) is logged as an error
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    cards = page.locator("article.host")
    assert await cards.count() == 2
    for host_id in web_pool.hosts.values():
        bars = page.locator(f'article[data-host="{host_id}"] .bar')
        assert await bars.count() == 3
    assert await page.locator('.totals .bar[data-resource="CPU"] .figures').inner_text() == "0 of 4 used"
    laptop = page.locator(f'article[data-host="{web_pool.hosts["laptop"]}"] .labels')
    assert XSS in await laptop.inner_text()
    assert await page.locator("article.host img").count() == 0

    before = await web_pool.pool.store.head_position()
    await page.evaluate("window.sameDocument = true")  # gone if the page reloads
    alloc_id = await web_pool.allocate("alice")
    await page.wait_for_selector(f'[data-alloc="{alloc_id}"]', timeout=2000)
    assert await page.evaluate("window.sameDocument === true"), "the page must update without reloading"
    assert dialogs == []
    await page.screenshot(path=str(web_pool.shots / "pool.png"), full_page=True)

    await page.goto(f"/?at={before}")
    assert await page.locator("article.host").count() == 2
    assert await page.locator(f'[data-alloc="{alloc_id}"]').count() == 0, "?at= shows the log as it was"
    await page.goto("/web/history")
    assert await page.locator("figure.plot svg polyline.reserved").count() == 2
    await page.screenshot(path=str(web_pool.shots / "history.png"), full_page=True)
    assert dialogs == []
    assert errors == []
    await page.context.close()


async def test_allocation_page_extends_and_releases_and_hides_others(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: alice extends then releases her allocation through its page; bob lists his own and asks
    for alice's page by URL. Must hold: AllocationExtended then AllocationReleased are in its stream;
    bob's list never shows alice's allocation and her page answers him 404."""
    alloc_id = await web_pool.allocate("alice")
    page = await web_pool.signed_in(browser, "alice")
    await page.goto("/web/mine")
    await page.wait_for_selector(f'[data-alloc="{alloc_id}"]')
    assert await page.locator("table.allocations th", has_text="user").count() == 0
    await page.screenshot(path=str(web_pool.shots / "mine.png"), full_page=True)

    await page.goto(f"/web/allocations/{alloc_id}")
    assert f"potluck ssh {alloc_id}" in await page.locator("input.copy").first.input_value()
    await page.select_option("#by", "4h")
    await page.click("#extend")
    await page.wait_for_url(f"**/web/allocations/{alloc_id}")
    assert "AllocationExtended" in await web_pool.event_types(alloc_id)
    await page.screenshot(path=str(web_pool.shots / "allocation.png"), full_page=True)
    await page.click("#release")
    await page.wait_for_url(f"**/web/allocations/{alloc_id}")
    assert "AllocationReleased" in await web_pool.event_types(alloc_id)
    await page.wait_for_selector(".timeline >> text=AllocationReleased")
    # Released: nothing to connect to any more (before, its page still offered `potluck ssh`,
    # which then failed); and a user is shown no operator's command.
    await page.reload()
    assert await page.locator("section.connect").count() == 0
    assert "potluck ops trace" not in await page.content()
    # A task whose stopped container is kept: its page offers its files and log, not a shell.
    kept = await web_pool.allocate("alice", ("true",), keep_for=600)
    await page.goto(f"/web/allocations/{kept}")
    await page.wait_for_selector("#live >> text=exited")
    await page.reload()
    offered = await page.locator("section.connect input.copy").evaluate_all("els => els.map(e => e.value)")
    assert offered == [f"potluck cp {kept}:/PATH .", f"potluck logs {kept}"], offered
    await page.context.close()

    bob = await web_pool.signed_in(browser, "bob")
    await bob.goto("/web/mine")
    assert alloc_id not in await bob.content()
    answer = await bob.goto(f"/web/allocations/{alloc_id}")
    assert answer is not None
    assert answer.status == 404
    await bob.goto("/")
    assert alloc_id not in await bob.content()
    await bob.context.close()


async def test_a_jobs_page_lists_its_tasks_with_their_allocations_for_its_owner_only(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: alice submits a job of 3 tasks (task 1 exits 3), opens "My allocations and jobs",
    follows the job's link; bob asks for the job's page by URL. Before, jobs were not links and
    /web/jobs/ID was a 404 for everyone. Must hold: the job's page shows its state and counts,
    a row per task with its state, exit code and a link to its allocation's page (which opens);
    bob gets 404."""
    headers = {"Authorization": f"Bearer {web_pool.tokens['alice']}"}
    body = {
        "tasks": 3,
        "cpus": 0.1,
        "memory": "32M",
        "disk": "32M",
        "image": DEFAULT_TAG,
        "command": ["sh", "-c", 'test "$POTLUCK_TASK_INDEX" != 1 || exit 3'],
        "keep_for": 0,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{web_pool.pool.api}/v1/jobs", json=body, headers=headers) as r:
            job = await r.json()
            assert r.status == 201, job
        async with http.get(
            f"{web_pool.pool.api}/v1/jobs/{job['id']}?wait=done&timeout=60", headers=headers
        ) as r:
            done = await r.json()
    assert done["state"] == "failed", done
    page = await web_pool.signed_in(browser, "alice")
    await page.goto("/web/mine")
    await page.click(f'[data-job="{job["id"]}"] a')
    await page.wait_for_url(f"**/web/jobs/{job['id']}")
    assert await page.locator(".job-counts").inner_text() == "2 succeeded, 1 failed"
    rows = await page.locator("table.tasks tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))"
    )
    assert [(r[0], r[3]) for r in rows] == [("0", "0"), ("1", "3"), ("2", "0")], rows
    assert rows[1][1].startswith("failed"), rows
    await page.screenshot(path=str(web_pool.shots / "job.png"), full_page=True)
    await page.click('[data-task="1"] a')
    await page.wait_for_url(f"**/web/allocations/{done['task_list'][1]['alloc_id']}")
    await page.context.close()

    bob = await web_pool.signed_in(browser, "bob")
    answer = await bob.goto(f"/web/jobs/{job['id']}")
    assert answer is not None
    assert answer.status == 404
    await bob.context.close()


async def test_a_member_sees_their_machine_and_nothing_else(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Tried: desk's member signs in with their web token, then asks for the pool and the user pages.
    Must hold: their page shows desk with its bars and owner-policy state, never laptop; the pool
    page and the users' pages send them back to their machine. The member token that
    `potluck ops hosts enroll --credentials-out` prints for a new machine signs in as well."""
    page = await web_pool.signed_in(browser, "member", landing="/web/machine")
    cards = page.locator("article.host")
    assert await cards.count() == 1
    assert await cards.first.get_attribute("data-host") == web_pool.hosts["desk"]
    assert await page.locator("article.host .bar").count() == 3
    assert await page.locator(".policy-state").inner_text() == "normal"
    assert await page.locator("figure.plot").count() == 2
    await page.screenshot(path=str(web_pool.shots / "machine.png"), full_page=True)
    for elsewhere in ("/", "/web/mine", "/web/history"):
        await page.goto(elsewhere)
        assert page.url.endswith("/web/machine"), elsewhere
    assert web_pool.hosts["laptop"] not in await page.content()
    await page.context.close()

    # The token `potluck ops hosts enroll` prints beside a new machine's credentials signs in too.
    made = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "potluck", "ops", "hosts", "enroll", "spare",
        "--credentials-out", str(tmp_path / "spare.creds"), "--state-dir", str(tmp_path / "no-up"),
        "--database-url", web_pool.pool.database_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await made.communicate()
    assert made.returncode == 0, err.decode()
    web_pool.tokens["spare"] = json.loads(out)["member_token"]
    spare = await web_pool.signed_in(browser, "spare", landing="/web/machine")
    assert "None of your machines has registered yet" in await spare.locator("main").inner_text()
    await spare.context.close()


async def test_an_operator_sees_every_users_allocations_and_changes_none(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: `potluck ops users web-token` prints an operator token; the operator signs in with it
    and opens the list and one of alice's allocations. Must hold: alice's and bob's allocations are
    listed, alice's page opens (200) and offers no extend or release button."""
    made = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "potluck", "ops", "users", "web-token",
        "--database-url", web_pool.pool.database_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await made.communicate()
    assert made.returncode == 0, err.decode()
    web_pool.tokens["operator"] = out.decode().strip()
    alice, bob = await web_pool.allocate("alice"), await web_pool.allocate("bob")

    page = await web_pool.signed_in(browser, "operator")
    await page.goto("/web/mine")
    for alloc_id in (alice, bob):
        await page.wait_for_selector(f'[data-alloc="{alloc_id}"]')
    # Whose each one is: a column only the operator's list has (a user's are all theirs).
    assert await page.locator("table.allocations th", has_text="user").count() == 1
    answer = await page.goto(f"/web/allocations/{alice}")
    assert answer is not None
    assert answer.status == 200
    assert await page.locator("#extend, #release").count() == 0
    await page.context.close()


def loopback_jar(web_pool: WebPool) -> aiohttp.CookieJar:
    """A client's cookies as a browser keeps them for a page on 127.0.0.1: from an IP address
    (unsafe) and Secure over plain http, since loopback counts as a secure origin."""
    return aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[web_pool.pool.api])


async def test_pages_refuse_posts_without_the_session_token(web_pool: WebPool) -> None:
    """Tried: with a plain client, sign in by the form, then POST a release without the CSRF token.
    Must hold: the session cookie is Secure, HttpOnly, SameSite=Strict and holds no token; the POST
    is refused (403) and appends nothing; pages send a Content-Security-Policy with no inline script.
    Also tried: signing in over plain http under an address that is not loopback (a Host header),
    where the browser would drop the Secure cookie: refused (400) with the reason, no session."""
    alloc_id = await web_pool.allocate("alice")
    before = await web_pool.event_types(alloc_id)
    async with aiohttp.ClientSession(cookie_jar=loopback_jar(web_pool)) as http:
        async with http.post(
            f"{web_pool.pool.api}/web/signin",
            data={"token": web_pool.tokens["alice"]},
            # An address, not a name: a name the operator did not configure is refused before
            # (421, test_web_hardening.py); this one reaches the https check.
            headers={"Host": "192.0.2.10:8080", "Origin": "http://192.0.2.10:8080"},
            allow_redirects=False,
        ) as r:
            assert r.status == 400
            assert "needs https" in await r.text()
            assert "Set-Cookie" not in r.headers
        async with http.get(f"{web_pool.pool.api}/web/signin") as r:
            assert r.status == 200
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
        async with http.post(
            f"{web_pool.pool.api}/web/signin",
            data={"token": web_pool.tokens["alice"]},
            headers={"Origin": web_pool.pool.api},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
            assert "Secure" in cookie
            assert "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
            assert web_pool.tokens["alice"] not in cookie
        async with http.post(
            f"{web_pool.pool.api}/web/allocations/{alloc_id}/release", data={}, allow_redirects=False
        ) as r:
            assert r.status == 403
    assert await web_pool.event_types(alloc_id) == before


async def test_rotating_a_users_token_ends_their_web_sessions(web_pool: WebPool) -> None:
    """Tried: carol signs in with a plain client, then an operator rotates her token (a leaked one).
    Must hold: the pool page answers her session before, and sends it to sign in after."""
    token = await web_pool.pool.add_user("carol")
    async with aiohttp.ClientSession(cookie_jar=loopback_jar(web_pool)) as http:
        async with http.post(
            f"{web_pool.pool.api}/web/signin", data={"token": token}, headers={"Origin": web_pool.pool.api}
        ) as r:
            assert r.status == 200
        async with http.get(f"{web_pool.pool.api}/", allow_redirects=False) as r:
            assert r.status == 200
        events, _ = rotate_token(User("carol", token_hash(token), Quota()), "carol")
        await web_pool.pool.store.append(user_stream("carol"), events)
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # until the allocator has folded the rotation
            async with http.get(f"{web_pool.pool.api}/", allow_redirects=False) as r:
                if r.status == 303:
                    assert r.headers["Location"] == "/web/signin"
                    return
                assert r.status == 200
            assert asyncio.get_running_loop().time() < deadline, "the old session still works"
            await asyncio.sleep(0.1)


async def test_an_open_page_says_so_when_its_session_is_signed_out_elsewhere(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: alice opens the pool page in one tab, then signs out in another tab of the same
    browser. Must hold: the first tab's live part stops and the page says she was signed out
    (the stream's `signed-out` event), without a reload; no script error."""
    page = await web_pool.signed_in(browser, "alice")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.evaluate("window.sameDocument = true")
    other = await page.context.new_page()
    await other.goto("/")
    async with other.expect_navigation(wait_until="domcontentloaded"):
        await other.click("form[action='/web/signout'] button")
    assert other.url.endswith("/web/signin")

    note = page.locator(".live-note")
    await note.wait_for(timeout=10_000)
    assert "signed out" in await note.inner_text()
    assert await page.evaluate("window.sameDocument === true"), "the page must say it without reloading"
    assert await page.locator("[data-live].stale").count() == 1
    assert errors == []
    await page.context.close()


#: Prints a line with markup, then a numbered line every 0.3 s.
TALKER = (
    "sh",
    "-c",
    "echo '<b>first</b>'; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo line-$i; sleep 0.3; done",
)


async def _last_number(page: Page) -> int:
    text: str = await page.locator("#log div").last.inner_text()
    return int(text.removeprefix("line-")) if text.startswith("line-") else 0


async def test_allocation_page_tails_its_log_live_for_its_owner_only(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: alice's container prints a line with markup, then a line every 0.3 s; she opens its page
    and stays on it. Bob asks for the log's route by URL, and the other host's NATS identity asks
    for (and listens to) the allocation's host's log requests.
    Must hold: the lines show on the page, the markup as text; later lines arrive without a reload;
    once released (its container removed) the page says the log is gone; Bob gets 404 and no line;
    NATS refuses the other host both ways and it hears no request."""
    alloc_id = await web_pool.allocate("alice", TALKER)
    page = await web_pool.signed_in(browser, "alice")
    errors: list[str] = []  # a CSP violation (an inline script) is logged as an error
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"/web/allocations/{alloc_id}")
    await page.evaluate("window.sameDocument = true")  # gone if the page reloads
    await page.locator("#log div", has_text="line-2").wait_for(timeout=60_000)
    assert await page.locator("#log div").first.inner_text() == "<b>first</b>"
    assert await page.locator("#log b").count() == 0, "a log line must show as text, never as markup"
    seen = await _last_number(page)
    await page.locator("#log div", has_text=f"line-{seen + 3}").wait_for(timeout=20_000)
    assert await page.evaluate("window.sameDocument === true"), "new lines must come without a reload"
    texts = await page.locator("#log div").all_inner_texts()
    numbered = [int(t.removeprefix("line-")) for t in texts if t.startswith("line-")]
    assert numbered == list(range(numbered[0], numbered[-1] + 1)), "no line twice, none lost"
    assert errors == []
    await page.screenshot(path=str(web_pool.shots / "allocation-log.png"), full_page=True)
    headers = {"Authorization": f"Bearer {web_pool.tokens['alice']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{web_pool.pool.api}/v1/allocations/{alloc_id}", headers=headers) as r,
    ):
        assert r.status in (200, 202), await r.text()
    # Released, its container removed: the page says where the log went, and keeps what it showed.
    await page.locator(".log-note", has_text="gone from host").wait_for(timeout=30_000)
    assert await page.locator("#log div", has_text="line-1").count() >= 1
    await page.context.close()

    bob = await web_pool.signed_in(browser, "bob")
    answer = await bob.context.request.get(f"/web/live/allocations/{alloc_id}/log")
    assert answer.status == 404
    assert "line-" not in await answer.text()
    await bob.context.close()

    placed = [
        r
        for r in await web_pool.pool.store.read_stream(alloc_stream(alloc_id))
        if r.type == "AllocationPlaced"
    ]
    holder = placed[-1].data["host_id"]
    (other,) = [h for host_id, h in web_pool.enrolled.items() if host_id != holder]
    refused: list[str] = []
    spy = await web_pool.pool.client(other, errors=refused)
    heard: list[bytes] = []
    try:

        async def listen(msg: Any) -> None:
            heard.append(msg.data)

        await spy.subscribe(f"potluck.logs.{holder}", cb=listen)
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await spy.request(
                f"potluck.logs.{holder}", json.dumps({"alloc_id": alloc_id}).encode(), timeout=1
            )
        deadline = asyncio.get_running_loop().time() + 10
        while len([e for e in refused if "permissions violation" in e.lower()]) < 2:
            assert asyncio.get_running_loop().time() < deadline, refused
            await asyncio.sleep(0.1)
    finally:
        await spy.close()
    assert heard == []
    assert all(f"potluck.logs.{holder}" in e for e in refused if "permissions violation" in e.lower())


async def test_a_long_history_shows_the_newest_finished_and_says_how_many_are_left_out(
    web_pool: WebPool,
    browser: Browser,  # noqa: F811
) -> None:
    """Tried: erin has 53 finished allocations (written to the log as a long-lived user's would
    be) and then one that runs; she opens her page. Must hold: it lists 51 allocations, the one
    that runs and the 50 newest finished, counts all 54, and says that 3 older ones are not shown
    and that `potluck alloc ls` lists them all; the 3 oldest are not on it."""
    web_pool.tokens["erin"] = await web_pool.pool.add_user("erin")
    spec = AllocationSpec(
        resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=64 << 20), image=DEFAULT_TAG
    )
    old = [f"old-erin-{n:02}" for n in range(53)]
    for alloc_id in old:
        await web_pool.pool.store.append(
            alloc_stream(alloc_id),
            [
                AllocationRequested(alloc_id=alloc_id, user="erin", spec=spec, lifetime_s=60),
                AllocationReleased(alloc_id=alloc_id, by="user:erin"),
            ],
            expected_version=0,
        )
    running = await web_pool.allocate("erin")

    page = await web_pool.signed_in(browser, "erin")
    await page.goto("/web/mine")
    await page.wait_for_selector(f'[data-alloc="{running}"]')
    assert await page.locator("table.allocations tbody tr").count() == 51
    assert await page.locator("h2").first.inner_text() == "Allocations (54)"
    note = page.locator("p.not-shown").first
    assert await note.get_attribute("data-not-shown") == "3"
    assert "3 older finished allocations" in await note.inner_text()
    assert "potluck alloc ls lists them all" in await note.inner_text()
    content = await page.content()
    assert all(f'data-alloc="{a}"' not in content for a in old[:3])
    assert all(f'data-alloc="{a}"' in content for a in old[3:])
    await page.context.close()
