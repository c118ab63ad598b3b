"""A session signed in over loopback, against its cookie replayed from another local account
(services/allocator/web/peer.py, sessions.py), over real TCP against the allocator's own app.

Browsers send the cookie of http://127.0.0.1:PORT to every other port of 127.0.0.1, so a program
another person runs there receives it. Here that person is a real other account: the replay is
sent by a process running as `nobody` (the tests run as root, which may start one).
"""

import asyncio
import os
from asyncio.subprocess import PIPE

from potluck.allocator.web.sessions import COOKIE
from potluck.contracts.allocation_events import alloc_stream
from tests.fixtures.web_app import WebApp

#: The account the replaying process runs as: nobody's, present on every Debian.
NOBODY = 65534
#: The system's interpreter (the replay needs only its standard library): nobody may not run
#: the worktree's own.
SYSTEM_PYTHON = "/usr/bin/python3"

#: What the other account's program does with the cookie it received: GET a page with it, POST
#: a release with the CSRF token the owner's page holds; it prints each status and Location.
REPLAY = r"""
import sys, urllib.request, urllib.error
base, cookie, alloc_id, csrf = sys.argv[1:5]
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None
opener = urllib.request.build_opener(NoRedirect)
def send(path, data=None):
    request = urllib.request.Request(base + path, data=data, headers={"Cookie": cookie, "Origin": base})
    try:
        with opener.open(request) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", ""), e.read().decode()
for path, data in ((f"/web/allocations/{alloc_id}", None), ("/web/mine", None),
                   (f"/web/allocations/{alloc_id}/release", f"csrf={csrf}".encode()),
                   ("/web/signout", f"csrf={csrf}".encode())):
    status, location, body = send(path, data)
    print(status, location, alloc_id in body)
"""


async def _as_nobody(*args: str) -> list[str]:
    # A process of its own (not a thread): the kernel must see another account's socket. The
    # loop goes on serving the app meanwhile.
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, "-I", "-c", REPLAY, *args, user=NOBODY, stdout=PIPE, stderr=PIPE
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines()


async def test_a_loopback_sessions_cookie_replayed_from_another_account_opens_nothing(pages: WebApp) -> None:
    """Tried: alice signs in over 127.0.0.1 and opens her allocation's page; a process of another
    local account (nobody) then sends her cookie, as a program on another port that received it
    would: her allocation's page, her list, a release and a sign-out, with the CSRF token of her
    page. Must hold: each answer sends it to sign in (303 to /web/signin) and shows nothing of
    hers; her allocation is not released; her own session still opens her page afterwards."""
    assert os.getuid() == 0, "the replay needs another account; the tests run as root"
    alice = await pages.signed_in("alice")
    alloc_id = await pages.pending("alice")
    status, page = await pages.get(alice, f"/web/allocations/{alloc_id}")
    assert status == 200
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    before = len(await pages.engine.store.read_stream(alloc_stream(alloc_id)))

    answers = await _as_nobody(pages.url, f"{COOKIE}={alice}", alloc_id, csrf)

    assert answers == ["303 /web/signin False"] * 4, answers
    assert len(await pages.engine.store.read_stream(alloc_stream(alloc_id))) == before
    status, page = await pages.get(alice, f"/web/allocations/{alloc_id}")
    assert status == 200
    assert alloc_id in page
