"""What the allocator keeps of a host's answer to a log-tail request, and what of it an open log
page carries (real NATS, the allocator's own app over real HTTP; the host is a client answering
as a hostile hostd would)."""

import asyncio
import json

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from potluck.allocator.web.log_tail import MAX_CODE_CHARS, MAX_MESSAGE_CHARS, LogSource, LogUnavailable
from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.contracts.log_tail import (
    ANSWER_BUDGET,
    MAX_LINE_CHARS,
    MAX_LINES,
    LogLine,
    LogTailPage,
    LogTailRequest,
    fit_page,
)
from potluck.contracts.subjects import LOG_TAIL, host_subject
from potluck.events import EventStore
from tests.fixtures.pool import place
from tests.fixtures.web_app import serving
from tests.helpers import wait_until


async def test_a_hosts_refusal_is_kept_only_to_its_bound(nc: NATS) -> None:
    """Tried: a host answers the allocator's log-tail request with a refusal whose code is 10,000
    characters and whose message is 200,000 (within the answer's budget). Before: both were kept
    whole, and the allocator logged the message at every poll of every viewer's page. Must
    hold: the refusal reaches the allocator as LogUnavailable, its code and message cut to
    their bounds."""

    async def hostile(msg: Msg) -> None:
        error = {"code": "C" * 10_000, "message": "m" * 200_000}
        await msg.respond(json.dumps({"ok": False, "error": error}).encode())

    await nc.subscribe(host_subject(LOG_TAIL, "h-hostile"), cb=hostile)
    with pytest.raises(LogUnavailable) as refused:
        await LogSource(nc, timeout=10).page("h-hostile", LogTailRequest(alloc_id="a-1"))
    assert refused.value.code == "C" * MAX_CODE_CHARS
    assert refused.value.message == "m" * MAX_MESSAGE_CHARS


def _line(n: int, text: str = "x") -> dict[str, str]:
    return {"at": f"2026-12-01T00:00:00.{n:09d}Z", "stream": "stdout", "text": text}


@pytest.mark.parametrize(
    ("what", "answer", "code"),
    [
        # Within NATS' payload, four times the budget: one line as long as the rest would allow.
        ("a page of 900 KB", {"ok": True, "data": {"lines": [_line(1, "x" * 900_000)]}}, "TOO_LARGE"),
        ("a refusal of 900 KB", {"ok": False, "error": {"code": "C", "message": "m" * 900_000}}, "TOO_LARGE"),
        # Within the bytes (220 KB): thousands of empty lines where 100 were asked for.
        ("3,000 lines", {"ok": True, "data": {"lines": [_line(i, "") for i in range(3_000)]}}, "BAD_ANSWER"),
        ("an uncut line", {"ok": True, "data": {"lines": [_line(1, "x" * 100_000)]}}, "BAD_ANSWER"),
    ],
)
async def test_a_hosts_page_past_its_bounds_is_refused(
    nc: NATS, what: str, answer: object, code: str
) -> None:
    """Tried: a host answers the allocator's request for 100 lines with a page or a refusal of
    900 KB (up to NATS' 1 MiB payload, which every poll of every open log page would read, parse
    and send on), with 3,000 lines, or with one line of 100,000 characters. Before: each was
    taken whole and sent to the browser. Must hold: each is refused as LogUnavailable with its
    code (TOO_LARGE before anything is parsed), and a page as hostd makes it, of wide
    characters and as large as the budget lets it be, is taken whole."""

    async def hostile(msg: Msg) -> None:
        await msg.respond(json.dumps(answer).encode())

    await nc.subscribe(host_subject(LOG_TAIL, "h-hostile"), cb=hostile)
    with pytest.raises(LogUnavailable) as refused:
        await LogSource(nc, timeout=10).page("h-hostile", LogTailRequest(alloc_id="a-1", tail=100))
    assert refused.value.code == code, (what, refused.value.message)

    wide = "😀" * MAX_LINE_CHARS
    flood = [LogLine(at=_line(i)["at"], stream="stdout", text=wide) for i in range(MAX_LINES)]
    full = fit_page(flood, None, MAX_LINES)

    async def honest(msg: Msg) -> None:
        reply = json.dumps({"ok": True, "data": full.model_dump(mode="json")}, ensure_ascii=False).encode()
        assert len(reply) <= ANSWER_BUDGET
        await msg.respond(reply)

    await nc.subscribe(host_subject(LOG_TAIL, "h-honest"), cb=honest)
    page = await LogSource(nc, timeout=10).page("h-honest", LogTailRequest(alloc_id="a-1", tail=MAX_LINES))
    assert page == LogTailPage.model_validate(full.model_dump(mode="json"))


async def test_an_open_log_page_never_carries_a_hosts_oversized_page(store: EventStore, nc: NATS) -> None:
    """Tried: alice's allocation placed on a hostile host; her allocation page's log stream
    (the allocator's own app over real HTTP, asking the host over real NATS) is opened, and the
    host answers its first request with a page of 900 KB in one line (within NATS' payload),
    then honestly with one line. Before: the 900 KB line was sent on to the browser. Must hold:
    the stream first says in a note that the host could not give the log, then carries the
    honest line, and nothing of the 900 KB page: what the browser read stays within a page's
    budget."""
    asked: list[LogTailRequest] = []

    async def hostile(msg: Msg) -> None:
        asked.append(LogTailRequest.model_validate_json(msg.data))
        if len(asked) == 1:
            page = {"lines": [_line(1, "x" * 900_000)], "cursor": {"at": _line(1)["at"], "same": 1}}
        else:
            page = {"lines": [_line(2, "hello")], "cursor": {"at": _line(2)["at"], "same": 1}}
        await msg.respond(json.dumps({"ok": True, "data": page}).encode())

    await nc.subscribe(host_subject(LOG_TAIL, "h-hostile"), cb=hostile)
    spec = AllocationSpec(
        resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=64 << 20), image="x:1"
    )
    async with serving(store, ("alice",), lambda app: None, logs=LogSource(nc)) as app:
        await place(store, "h-hostile", "a-0123456789ab", spec, user="alice")
        await wait_until(lambda: "a-0123456789ab" in app.engine.allocations.allocations, 10, "the placement")
        session = await app.signed_in("alice")
        stream = await app.open_stream(session, "/web/live/allocations/a-0123456789ab/log")
        read = b""
        try:
            assert stream.status == 200
            async with asyncio.timeout(30):
                while b"event: lines" not in read:
                    read += await stream.content.readany()
                read += await stream.content.readuntil(b"\n\n")
        finally:
            stream.close()
    assert len(read) < ANSWER_BUDGET
    assert b"xxxx" not in read
    events = [block for block in read.decode().split("\n\n") if block.strip()]
    assert events[0].startswith("event: note\n"), events[0]
    assert "could not read the log" in events[0], events[0]
    assert 'data: {"skipped": false, "lines": [["stdout", "hello"]]}' in events[-1], events[-1]
    assert len(asked) >= 2
