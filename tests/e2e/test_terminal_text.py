"""Another party's text on an operator's terminal, with the real `potluck ops` processes on a
real pool: a user's allocation carries escape sequences and rich markup, and the operator's
commands, run on a pseudo-terminal as a person runs them, show that text escaped."""

import asyncio
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from potluck.contracts.reports import ContainerFailed, report_subject
from tests.e2e.allocator_api import small
from tests.e2e.conftest import POTLUCK_OPS, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool

#: Short enough that the whole of it stays in view when a command cuts the spec to a few
#: dozen characters: a hyperlink in rich's markup, an OSC 52 clipboard write, a C1 CSI.
HOSTILE = "[link=https://e.io]x\x1b]52;c;aGk=\x07\x9b2J\u202e"


def on_a_terminal(
    *args: str,
    timeout: float = 60,
    command: tuple[str, ...] = POTLUCK_OPS,
    env: dict[str, str] | None = None,
) -> bytes:
    """What `potluck ops ARGS` (or `command ARGS`) writes when its stdout and stderr are a terminal."""
    leader, follower = pty.openpty()
    try:
        environment = {**os.environ, "COLUMNS": "400", "LINES": "100", **(env or {})}
        proc = subprocess.Popen([*command, *args], stdout=follower, stderr=follower, env=environment)
        os.close(follower)
        written = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command ended and everything it wrote was read
                break
            if not chunk:
                break
            written += chunk
        assert proc.wait(timeout) == 0, written.decode(errors="replace")
        return written
    finally:
        os.close(leader)


def from_the_user(written: bytes) -> list[str]:
    """The sequences of HOSTILE that reached the terminal as they were written."""
    text = written.decode(errors="replace")
    found = ["\x1b]52", "\x1b]8;", "\x9b", "\u202e", "\x07"]
    return [s for s in found if s in text]


async def _running(pool: Pool, user: str, **extra: Any) -> tuple[str, str]:
    """A new user's `sleep` allocation (with `extra` in its request), once it runs: its id and
    the user's token."""
    await pool.wait_api()
    token = await pool.add_user(user)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            pool.api + "/v1/allocations", json=small(**extra), headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        created = await r.json()
        assert r.status == 201, created
    await wait_for_status(pool, created["id"], "running")
    return str(created["id"]), token


async def test_an_operators_views_show_a_users_hostile_environment_escaped(
    pool: Pool, laptop: EnrolledHost, database_url: str
) -> None:
    # Tried: a user's allocation whose environment holds markup and escape sequences; the
    # operator shows its stream's history as a table (rich) on a terminal. Holds: no hyperlink,
    # clipboard write, CSI or bidi override of the user's reaches the terminal, and the text is
    # still there to read, its brackets as written.
    alloc_id, _ = await _running(pool, "mallory", env={"E": HOSTILE})

    written = await asyncio.to_thread(
        on_a_terminal, "events", "show", f"alloc-{alloc_id}", "--database-url", database_url
    )
    text = written.decode(errors="replace")
    assert "AllocationRequested" in text
    assert from_the_user(written) == [], text
    assert "[link=https://e.io]x" in text  # the markup shown as written, not made a link


async def test_a_members_hostile_failure_detail_is_shown_escaped_to_operator_and_user(
    pool: Pool, laptop: EnrolledHost, database_url: str, tmp_path: Path
) -> None:
    # Tried: a member's hostd (here the test, with the laptop's own NATS credentials) reports an
    # allocation failed with a detail holding escape sequences, which the log records; the
    # operator follows that stream (`events tail`, `events show`) and the allocation's user shows
    # it (`alloc show`), each on a terminal. Holds: none of the member's sequences reaches either
    # terminal raw (nor rich's markup a hyperlink), and the detail is readable with its escapes.
    alloc_id, token = await _running(pool, "alice")

    report = ContainerFailed(alloc_id=alloc_id, reason="start_failed", detail="oops " + HOSTILE)
    nc = await pool.client(laptop)
    try:
        await nc.jetstream().publish(
            report_subject(laptop.host_id, report),
            report.model_dump_json().encode(),
            headers={"Nats-Msg-Id": report.report_id},
        )
    finally:
        await nc.close()
    async with asyncio.timeout(30):
        while "AllocationFailed" not in [e.type for e in await pool.store.read_stream(f"alloc-{alloc_id}")]:
            await asyncio.sleep(0.2)

    written = await asyncio.to_thread(
        on_a_terminal,
        "events",
        "tail",
        "--stream",
        f"alloc-{alloc_id}",
        "--type",
        "AllocationFailed",
        "--after",
        "0",
        "--count",
        "1",
        "--database-url",
        database_url,
    )
    text = written.decode(errors="replace")
    assert "AllocationFailed" in text
    assert from_the_user(written) == [], text
    # The line cuts a value at 40 characters; what it shows of the detail is escaped.
    assert "detail=oops [link=https://e.io]x\\x1b]52;c;aGk=\\x07..." in text

    # The same stream as a table (rich), and the allocation as its user sees it.
    written = await asyncio.to_thread(
        on_a_terminal, "events", "show", f"alloc-{alloc_id}", "--database-url", database_url
    )
    text = written.decode(errors="replace")
    assert "AllocationFailed" in text
    assert from_the_user(written) == [], text
    assert "\\x1b]52;c;aGk=" in text

    potluck = (sys.executable, "-m", "potluck")
    login = {"POTLUCK_CONFIG": str(tmp_path / "client.toml")}
    await asyncio.to_thread(
        on_a_terminal, "login", "--url", pool.api, "--token", token, command=potluck, env=login
    )
    written = await asyncio.to_thread(on_a_terminal, "alloc", "show", alloc_id, command=potluck, env=login)
    text = written.decode(errors="replace")
    assert alloc_id in text
    assert from_the_user(written) == [], text
    # The whole detail, its markup shown as written rather than made a hyperlink.
    assert "detail: oops [link=https://e.io]x\\x1b]52;c;aGk=\\x07\\x9b2J\\u202e" in text
