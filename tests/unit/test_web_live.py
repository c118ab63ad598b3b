"""The pages' live updates (services/allocator/web/live.py) without a server.

What must hold: a waiter wakes when the fold moves, and at once when the app
closes (else shutting down would wait for every open page); a fragment of
several lines goes out as one server-sent event whose data lines rejoin to it;
the stream slots refuse one past a session's or an owner's bound, never count
one session's against another owner, and come free when a stream ends.
"""

import asyncio
import re

import pytest

from potluck.allocator.web.live import Changes, StreamsFull, StreamSlots, TooManyStreams, sse_event


async def test_a_waiter_wakes_on_a_fold_and_at_once_on_close() -> None:
    changes = Changes()
    waiting = asyncio.ensure_future(changes.after(0, timeout=30))
    await asyncio.sleep(0)
    changes.folded([])
    async with asyncio.timeout(5):
        assert await waiting == 1

    waiting = asyncio.ensure_future(changes.after(1, timeout=30))
    await asyncio.sleep(0)
    changes.close()
    async with asyncio.timeout(5):
        assert await waiting == 1
    assert changes.closed


async def test_a_quiet_wait_ends_at_its_timeout_with_the_count_unchanged() -> None:
    assert await Changes().after(0, timeout=0.01) == 0


def test_a_fragment_goes_out_as_one_event_of_data_lines() -> None:
    raw = sse_event("fragment", "<p>a</p>\n<p>b</p>").decode()
    lines = raw.split("\n")
    assert lines[0] == "event: fragment"
    assert [line.removeprefix("data: ") for line in lines if line.startswith("data: ")] == [
        "<p>a</p>",
        "<p>b</p>",
    ]
    assert raw.endswith("\n\n")


def _browser_reads(raw: str) -> list[dict[str, str]]:
    """The events a browser's EventSource makes of `raw`, by the standard's parsing: lines end
    at CRLF, LF or CR only; a field is `name: value`; `data` lines join with LF."""
    events: list[dict[str, str]] = []
    fields: dict[str, list[str]] = {}
    for line in re.split(r"\r\n|\r|\n", raw):
        if not line:
            if fields:
                events.append({k: "\n".join(v) for k, v in fields.items()})
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))
    return events


def test_data_reaches_the_browser_as_it_is_whatever_separators_it_holds() -> None:
    """Tried: a fragment holding every character Python's splitlines splits at but the browser
    does not (U+2028, U+2029, U+0085, VT, FF, U+001C-U+001E), markup that would end a script, and
    CR, CRLF and LF. Must hold: the browser reads one event whose data is the fragment, with
    CR and CRLF read as LF (as an HTML parser reads them anyway)."""
    html = "<p>a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei</p></script><script>x()</script>\rj\r\nk\nl"
    (event,) = _browser_reads(sse_event("fragment", html).decode())
    assert event == {"event": "fragment", "data": html.replace("\r\n", "\n").replace("\r", "\n")}


def test_an_id_holding_a_line_end_is_left_out_and_starts_no_event_of_its_own() -> None:
    """Tried: an event id (a member's host chose it: a log cursor) holding LF and CR with an
    event after it. Must hold: the browser reads one event, ours, without that id."""
    for sneaky in ("x\nevent: signed-out\ndata: sign in at evil.example\n", "x\rdata: y", "x\x00"):
        events = _browser_reads(sse_event("lines", '{"lines": []}', sneaky).decode())
        assert events == [{"event": "lines", "data": '{"lines": []}'}]
    (kept,) = _browser_reads(sse_event("lines", "{}", "2026-12-05T00:00:00Z|3").decode())
    assert kept["id"] == "2026-12-05T00:00:00Z|3"


async def test_a_wait_cancelled_as_its_change_lands_is_cancelled_all_the_same() -> None:
    """The change and the cancellation arrive in the same turn of the loop: the wait must end
    cancelled. Python 3.11's asyncio.wait_for returned the result instead, losing the
    cancellation (bpo-42130), which kept loops around it running after their task was stopped;
    ruff now bans it (TID251)."""
    changes = Changes()
    waiting = asyncio.ensure_future(changes.after(0, timeout=30))
    await asyncio.sleep(0)
    changes.folded([])
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_slots_refuse_past_a_sessions_bound_and_past_its_owners() -> None:
    slots = StreamSlots(per_session=2, per_owner=3)
    slots.take("a1", "alice")
    slots.take("a1", "alice")
    with pytest.raises(TooManyStreams, match="this browser"):
        slots.take("a1", "alice")
    slots.take("a2", "alice")  # another session of hers: the owner's bound is next
    with pytest.raises(TooManyStreams, match="all your browsers"):
        slots.take("a3", "alice")
    slots.take("b1", "bob")  # bob's own count, untouched by alice's
    slots.take("b1", "bob")
    assert slots.open_of("alice") == 3
    assert slots.open_of("bob") == 2


def test_slots_refuse_anybody_past_everybodys_bound_until_one_is_given_back() -> None:
    slots = StreamSlots(per_session=2, per_owner=2, total=3)
    slots.take("a1", "alice")
    slots.take("a1", "alice")
    slots.take("b1", "bob")
    with pytest.raises(StreamsFull, match="serves 3 live pages"):
        slots.take("c1", "carol")  # within carol's own bounds
    slots.give_back("a1", "alice")
    slots.take("c1", "carol")
    assert (slots.open_of("alice"), slots.open_of("bob"), slots.open_of("carol")) == (1, 1, 1)


def test_a_stream_that_ends_frees_its_slot_and_empty_counts_go() -> None:
    slots = StreamSlots(per_session=1, per_owner=1)
    slots.take("a1", "alice")
    with pytest.raises(TooManyStreams):
        slots.take("a1", "alice")
    slots.give_back("a1", "alice")
    assert slots.open_of("alice") == 0
    assert not slots._by_session
    assert not slots._by_owner
    slots.take("a1", "alice")
