"""What the allocation page says after a refused change (services/allocator/web/routes.py), over
real HTTP against the allocator's own app (tests/fixtures/web_app.py).

The redirect after a refused extend carries a code only, and the page shows its own words for a
code it knows and nothing for any other: a link to Potluck's page cannot make it say anything.
"""

from urllib.parse import parse_qs, quote, urlsplit

from potluck.allocator.web.routes import ACTION_ERRORS
from potluck.allocator.web.sessions import COOKIE
from potluck.contracts.allocation_events import AllocationReleased, alloc_stream
from tests.fixtures.web_app import WebApp
from tests.helpers import wait_until

PHISHING = "Your session expired: sign in again at https://potluck-login.example"
#: A line with no space, which a pattern of id or time characters once let through.
DOTTED = "SESSION-EXPIRED.SIGN-IN-AT-potluck-login.example"


async def test_a_refused_extend_shows_the_pages_own_words_and_no_text_from_the_link(pages: WebApp) -> None:
    """Tried: alice's allocation is released; she posts its page's extend form; then she opens its
    page with `?error=` holding a phishing line, and with an unknown code.
    Must hold: the extend is refused and redirects with `error=ALREADY_ENDED`, nothing else in the
    query; that page shows the page's own message for it in the alert box; the phishing line and
    the unknown code show nowhere on the page, and with them the page has no alert box at all."""
    alice = await pages.signed_in("alice")
    alloc_id = await pages.pending("alice")
    await pages.engine.store.append(
        alloc_stream(alloc_id), [AllocationReleased(alloc_id=alloc_id, by="user:alice")]
    )
    await wait_until(
        lambda: pages.engine.allocations.allocations[alloc_id].terminal, 10, "the release folded"
    )

    status, location = await pages.post(alice, f"/web/allocations/{alloc_id}/extend", {"by": "1h"})
    assert status == 303
    place = urlsplit(location)
    assert place.path == f"/web/allocations/{alloc_id}"
    assert parse_qs(place.query) == {"error": ["ALREADY_ENDED"]}
    status, page = await pages.get(alice, location)
    assert status == 200
    assert f'role="alert">{ACTION_ERRORS["ALREADY_ENDED"]}<' in page

    for given in (PHISHING, "NO_SUCH_CODE"):
        status, page = await pages.get(alice, f"/web/allocations/{alloc_id}?error={given}")
        assert status == 200
        assert given not in page
        assert 'role="alert"' not in page


async def test_a_missing_allocations_page_repeats_no_sentence_from_the_link(pages: WebApp) -> None:
    """Tried: alice opens the page of an allocation whose "id" in the link is a phishing line, and
    of one with a plain id that is not hers. Must hold: both are 404; the first page shows none
    of the link's words, nor does one spelled with dots and dashes; one shaped like an id is
    named."""
    alice = await pages.signed_in("alice")
    status, page = await pages.get(alice, "/web/allocations/x%20-%20" + quote(PHISHING, safe=""))
    assert status == 404
    assert "potluck-login.example" not in page
    assert "sign in again" not in page
    assert "no such allocation of yours" in page
    status, page = await pages.get(alice, f"/web/allocations/{DOTTED}")
    assert status == 404
    assert "SIGN-IN" not in page
    status, page = await pages.get(alice, "/web/allocations/a-000000000000")
    assert status == 404
    assert "no allocation a-000000000000 of yours" in page


async def test_a_sign_in_form_no_browser_sends_is_a_400_not_a_failure(pages: WebApp) -> None:
    """Tried: the sign-in form posted in a charset without a codec, and as multipart without its
    boundary. Must hold: 400 with what to do, no session cookie, and alice can still sign in."""
    for content_type in (
        "application/x-www-form-urlencoded; charset=bogus-xx",
        "multipart/form-data",
    ):
        async with pages.http.post(
            f"{pages.url}/web/signin",
            data=f"token={pages.tokens['alice']}".encode(),
            headers={"Content-Type": content_type, "Origin": pages.url},
            allow_redirects=False,
        ) as r:
            assert r.status == 400, (content_type, await r.text())
            assert "from Potluck's own page" in await r.text()
            assert COOKIE not in r.cookies
    await pages.signed_in("alice")


async def test_a_refused_at_repeats_no_sentence_from_the_link(pages: WebApp) -> None:
    """Tried: alice opens the pool page `?at=` a phishing line, one spelled with dots and dashes,
    and `?at=2026-13-01`. Must hold: each is a 400 saying `at` is neither a position nor a time;
    the first two show none of the link's words (they once showed its first 40 characters), the
    last, shaped like a time, is repeated."""
    alice = await pages.signed_in("alice")
    status, page = await pages.get(alice, "/?at=" + quote(PHISHING, safe=""))
    assert status == 400
    assert "neither a log position nor an ISO time" in page
    assert "session expired" not in page
    assert "sign in again" not in page
    status, page = await pages.get(alice, "/?at=SIGN-IN-AT-potluck-login.example")  # 32 characters
    assert status == 400
    assert "SIGN-IN" not in page
    status, page = await pages.get(alice, "/?at=2026-13-01")
    assert status == 400
    assert "2026-13-01" in page


async def test_a_parameter_given_twice_repeats_no_name_from_the_link(pages: WebApp) -> None:
    """Tried: the sign-in page (no session needed) and alice's pool page opened with a parameter
    given twice whose name is a phishing line, then one spelled with dots and dashes; then the
    pool page with `?at=` twice, and the sign-in form posted with a phishing field twice.
    Must hold: each is a 400; the first two and the form show none of the link's words (they
    once showed its first 40 characters on Potluck's origin), the `at` one names `at`."""
    alice = await pages.signed_in("alice")
    for path in ("/web/signin", "/"):
        for name in (PHISHING, DOTTED):
            twice = f"{quote(name, safe='')}=1&{quote(name, safe='')}=2"
            status, page = await pages.get(alice, f"{path}?{twice}")
            assert status == 400, (path, page)
            assert "more than once" in page
            assert "sign in" not in page.lower(), page
            assert "SIGN-IN" not in page
            assert "potluck-login" not in page
    status, page = await pages.get(alice, "/?at=1&at=2")
    assert status == 400
    assert page.startswith("at is given more than once")
    async with pages.http.post(
        f"{pages.url}/web/signin",
        data=[("token", pages.tokens["alice"]), (PHISHING, "1"), (PHISHING, "2")],
        headers={"Origin": pages.url},
        allow_redirects=False,
    ) as r:
        assert r.status == 400
        assert "potluck-login" not in await r.text()
        assert COOKIE not in r.cookies


async def test_a_missing_page_or_wrong_method_repeats_no_address_from_the_link(pages: WebApp) -> None:
    """Tried, without signing in (as anybody following a link): a page address under /web/ that
    is a phishing line, one spelled with dots and dashes, and a GET of an allocation's extend
    (POST only) whose id is the phishing line; then, with alice's bearer token, an API path that
    does not exist. Must hold: 404, 404 and 405, none showing the link's words (they once said
    `no such endpoint: /web/Your session expired...`); the API's 404 still names its path."""
    for path in ("/web/" + quote(PHISHING), f"/web/{DOTTED}"):
        async with pages.http.get(f"{pages.url}{path}", allow_redirects=False) as r:
            text = await r.text()
            assert r.status == 404, text
            assert "no such page" in text
            assert "potluck-login" not in text
            assert "SIGN-IN" not in text
    async with pages.http.get(
        f"{pages.url}/web/allocations/{quote(PHISHING, safe='')}/extend", allow_redirects=False
    ) as r:
        text = await r.text()
        assert r.status == 405, text
        assert r.headers["Allow"] == "POST"
        assert "potluck-login" not in text
    async with pages.http.get(
        f"{pages.url}/v1/no-such-thing", headers={"Authorization": f"Bearer {pages.tokens['alice']}"}
    ) as r:
        assert r.status == 404
        assert "no such endpoint: /v1/no-such-thing" in await r.text()


async def test_a_sign_in_that_names_no_origin_is_refused_and_the_api_is_not(pages: WebApp) -> None:
    """Tried: alice's good token posted to the sign-in form with neither Origin nor
    Sec-Fetch-Site (what another site's page sends through a browser or proxy that leaves them
    out: login CSRF, the victim signed in to the attacker's account), then with only
    `Sec-Fetch-Site: same-origin`, then with the page's own Origin; and her bearer token on the
    API with no Origin at all. Before: the first signed in (303 and a session cookie). Must
    hold: the first is a 403 whose page says to sign in from the sign-in page in a browser and
    why, and sets no cookie; the other two sign in (303, a session); the API answers 200."""
    form = {"token": pages.tokens["alice"]}
    async with pages.http.post(f"{pages.url}/web/signin", data=form, allow_redirects=False) as r:
        page = await r.text()
        assert r.status == 403, page
        assert "Set-Cookie" not in r.headers
        assert "sign in from this sign-in page in a browser" in page
        assert "without the Origin header" in page
        assert 'name="token"' in page, "the page is the sign-in form again"
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Origin": pages.url}):
        async with pages.http.post(
            f"{pages.url}/web/signin", data=form, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 303, (headers, await r.text())
            assert r.cookies.get(COOKIE) is not None, headers
    bearer = {"Authorization": f"Bearer {pages.tokens['alice']}"}
    async with pages.http.get(f"{pages.url}/v1/allocations", headers=bearer) as r:
        assert r.status == 200, await r.text()
