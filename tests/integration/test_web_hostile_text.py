"""Text another party wrote, on the pages in a real Chromium: an allocation's failure reason and
detail (a member's hostd writes them), shown in its state, its history and, live, after the
page opened (tests/fixtures/web_app.py serves the allocator's own app over real HTTP).

Markup, a closing script tag, a `javascript:` URL, ANSI escapes, bidi controls and a very long
line: each must show as the text it is, run nothing and load nothing.
"""

from playwright.async_api import Browser, expect

from potluck.contracts.allocation_events import AllocationFailed, alloc_stream
from tests.fixtures.browser import browser  # noqa: F401 (the fixture, used by name)
from tests.fixtures.web_app import WebApp
from tests.helpers import wait_until

HOSTILE = (
    '</script><script>alert("script")</script><img src=x onerror=alert("img")>'
    '<a href="javascript:alert(1)">click</a>\x1b[31mred\x1b[0m \u202eevil\u202c'
)
LONG = "x" * 5000


async def test_a_members_failure_words_show_as_text_loaded_and_live(pages: WebApp, browser: Browser) -> None:  # noqa: F811
    """Tried: alice opens her waiting allocation's page in Chromium; its failure is then recorded
    with a reason and a detail holding markup, a `javascript:` link, ANSI escapes, bidi
    overrides and 5,000 characters; the page updates live; then she reloads it.
    Must hold: the page shows the reason as text both live and reloaded, no dialog opens, no
    image or link element came from it, nothing was fetched but the allocator's own, and no
    console error (a CSP violation is one) was logged."""
    alloc_id = await pages.pending("alice")
    context = await browser.new_context(base_url=pages.url)
    page = await context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    requested: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requested.append(r.url))
    try:
        await page.goto("/web/signin")
        await page.fill("#token", pages.tokens["alice"])
        async with page.expect_navigation(wait_until="domcontentloaded"):
            await page.click("button[type=submit]")
        await page.goto(f"/web/allocations/{alloc_id}")
        await expect(page.locator("[data-live][data-updated]")).to_have_count(1)  # its stream is open

        failed = AllocationFailed(alloc_id=alloc_id, reason=HOSTILE + LONG, detail=HOSTILE)
        await pages.engine.store.append(alloc_stream(alloc_id), [failed])
        folded = "the failure folded"
        await wait_until(lambda: pages.engine.allocations.allocations[alloc_id].terminal, 10, folded)
        live = page.locator("#live")
        await expect(live).to_contain_text('alert("script")')  # the live part, not reloaded
        for when in ("live", "reloaded"):
            text = await live.inner_text()
            assert 'alert("script")' in text, (when, text[:300])
            assert "\x1b[31mred" in text, (when, text[:300])
            assert await page.locator("main img, main script, main a[href^=javascript]").count() == 0, when
            if when == "live":
                await page.reload()
        timeline = await page.locator(".timeline").inner_text()
        assert 'alert("img")' in timeline
        assert dialogs == []
        assert errors == []
        assert [u for u in requested if not u.startswith(pages.url)] == []
    finally:
        await context.close()
