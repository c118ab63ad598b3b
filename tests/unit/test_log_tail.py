"""The log tail's pure parts: the cursor that keeps a page from repeating or losing lines, the
page's bounds, the engine's frames, the page's words, and who NATS lets ask a host for logs."""

import json

from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.web.log_tail import Whereabouts, note_for
from potluck.contracts.log_tail import (
    ANSWER_BUDGET,
    MAX_LINE_CHARS,
    MAX_LINES,
    PAGE_BUDGET,
    LogCursor,
    LogLine,
    after_cursor,
    fit_page,
    out_of_bounds,
    since_parameter,
)
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import LOG_TAIL
from potluck.hostd.exec_stream import FRAME_HEADER
from potluck.hostd.log_tail import parse_entries
from potluck.registry.nats_auth import host_permissions, new_user_key, render_authorization


def _at(n: int) -> str:
    return f"2026-12-01T00:00:{n // 10:02d}.{n % 10:09d}Z"


def test_since_parameter_keeps_nanoseconds() -> None:
    """Tried: timestamps with 9, 3 and no fraction digits, and a non-UTC one.
    Must hold: exact `seconds.nanoseconds`; the non-UTC one is refused."""
    assert since_parameter("2026-12-01T00:00:01.123456789Z") == "1796083201.123456789"
    assert since_parameter("2026-12-01T00:00:01.5Z") == "1796083201.500000000"
    assert since_parameter("2026-12-01T00:00:01Z") == "1796083201.000000000"
    for bad in ("2026-12-01T00:00:01+01:00", "yesterday", "2026-12-01T00:00:01.12345678901Z"):
        try:
            since_parameter(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was taken")


# Logs as the engine holds them: a non-decreasing sequence of timestamps (some equal).
_logs = st.lists(st.integers(0, 5), max_size=40).map(
    lambda steps: [
        LogLine(at=_at(sum(steps[: i + 1])), stream="stdout", text=f"line {i}") for i in range(len(steps))
    ]
)


@given(_logs, st.lists(st.integers(1, 7), min_size=1, max_size=10))
def test_polling_with_the_cursor_sends_each_line_once(log: list[LogLine], growth: list[int]) -> None:
    """Tried: a log that grows in steps while a page polls with its cursor, each poll getting what
    the engine gives for `since` (every line at or after the cursor's time).
    Must hold: the lines sent, with those flagged as left out, are the log, in order, none twice."""
    sent: list[str] = []
    cursor: LogCursor | None = None
    shown = 0
    for grow in [*growth, len(log)]:
        shown = min(len(log), shown + grow)
        visible = log[:shown]
        since = [line for line in visible if cursor is None or line.at >= cursor.at]
        fresh = after_cursor(since, cursor)
        page = fit_page(fresh, cursor, len(fresh) or 1)  # no line left out: all must come
        sent.extend(line.text for line in page.lines)
        assert not page.skipped
        cursor = page.cursor
    assert sent == [line.text for line in log]


def test_a_page_keeps_the_newest_within_its_bounds() -> None:
    """Tried: more lines than the limit, a very long line, and more bytes than the budget.
    Must hold: the newest lines are kept, `skipped` says some were left out, a long line is cut,
    the page's JSON stays within the budget, and the cursor is past every line considered."""
    lines = [LogLine(at=_at(i), stream="stdout", text=f"l{i}") for i in range(10)]
    page = fit_page(lines, None, 3)
    assert [line.text for line in page.lines] == ["l7", "l8", "l9"]
    assert page.skipped
    assert page.cursor == LogCursor(at=_at(9), same=1)

    long = [LogLine(at=_at(1), stream="stderr", text="x" * 10 * MAX_LINE_CHARS)]
    cut = fit_page(long, None, 5)
    assert len(cut.lines[0].text) == MAX_LINE_CHARS + 1
    assert not cut.skipped

    flood = [LogLine(at=_at(i), stream="stdout", text="\x01" * MAX_LINE_CHARS) for i in range(200)]
    page = fit_page(flood, None, 200)
    assert page.skipped
    assert len(page.model_dump_json()) <= PAGE_BUDGET
    assert page.lines[-1] == flood[-1]
    assert page.cursor == LogCursor(at=flood[-1].at, same=1)


@given(st.sampled_from(["é", "€", "😀", "\ufffd"]))
def test_a_page_of_wide_characters_stays_within_its_budget_in_bytes(char: str) -> None:
    """Tried: a container's flood of full-length lines of a character of two, three or four
    bytes in UTF-8 (U+FFFD is what a binary's output decodes to). Before: the budget counted
    characters, so such a page took up to four times PAGE_BUDGET on the wire (past NATS'
    1 MiB, so hostd could not send it at all). Must hold: the page's JSON, and the reply
    hostd sends around it, are within PAGE_BUDGET and ANSWER_BUDGET bytes, and within the
    bounds the allocator holds any host's page to."""
    flood = [LogLine(at=_at(i), stream="stdout", text=char * MAX_LINE_CHARS) for i in range(MAX_LINES)]
    page = fit_page(flood, None, MAX_LINES)
    assert page.skipped
    assert len(page.model_dump_json().encode()) <= PAGE_BUDGET
    reply = Reply(ok=True, data=page.model_dump(mode="json")).model_dump_json().encode()
    assert len(reply) <= ANSWER_BUDGET
    assert out_of_bounds(page, MAX_LINES) is None


def test_a_page_past_its_bounds_is_named() -> None:
    """Tried: pages as a hostile host could answer: more lines than asked for, a line longer
    than a cut one, a line whose time is no timestamp's length; and pages fit_page makes.
    Must hold: each of the first is named by what is past its bound; none of fit_page's is."""
    ok = [LogLine(at=_at(i), stream="stdout", text="x" * MAX_LINE_CHARS) for i in range(5)]
    assert out_of_bounds(fit_page(ok, None, 5), 5) is None
    assert out_of_bounds(fit_page(ok * 100, None, MAX_LINES), MAX_LINES) is None
    many = fit_page(ok, None, 5)
    assert "6 lines" in (out_of_bounds(many.model_copy(update={"lines": ok + ok[:1]}), 5) or "")
    long = LogLine(at=_at(1), stream="stdout", text="x" * (MAX_LINE_CHARS + 2))
    assert "characters" in (out_of_bounds(many.model_copy(update={"lines": [long]}), 5) or "")
    late = LogLine(at="9" * 41, stream="stdout", text="x")
    assert "time" in (out_of_bounds(many.model_copy(update={"lines": [late]}), 5) or "")


def test_cursor_round_trips_through_an_event_id_and_refuses_junk() -> None:
    """Tried: a cursor as an SSE event id, and ids a browser might send that are no cursor.
    Must hold: the cursor comes back equal; junk gives None (the page starts afresh)."""
    cursor = LogCursor(at=_at(3), same=2)
    assert LogCursor.decode(cursor.encode()) == cursor
    for junk in ("", "abc", "x|1", f"{_at(3)}|", f"{_at(3)}|-1", f"{_at(3)}|0"):
        assert LogCursor.decode(junk) is None


def _frame(stream: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(stream, len(payload)) + payload


def test_parse_entries_reads_frames_and_drops_a_cut_one() -> None:
    """Tried: stdout and stderr entries with timestamps, then a frame cut short (a bounded read).
    Must hold: each whole frame is one line with its time and stream; the cut one is left out."""
    body = (
        _frame(1, f"{_at(1)} hello\n".encode())
        + _frame(2, f"{_at(2)} <b>oops</b>\n".encode())
        + _frame(1, f"{_at(3)} cut".encode())[:-2]
    )
    assert parse_entries(body) == [
        LogLine(at=_at(1), stream="stdout", text="hello"),
        LogLine(at=_at(2), stream="stderr", text="<b>oops</b>"),
    ]


def test_notes_say_why_there_are_no_lines() -> None:
    """Tried: each reason a page has no lines. Must hold: each says so in words a user acts on."""
    assert "waits for a host" in note_for(Whereabouts("pending", None), None, "a1")
    assert "not started yet" in note_for(Whereabouts("pulling", "h1"), "NOT_HERE", "a1")
    assert "gone from host h1" in note_for(Whereabouts("released", "h1"), "NOT_HERE", "a1")
    silent = note_for(Whereabouts("running", "h1"), "SILENT", "a1")
    assert "does not answer" in silent
    assert "potluck logs a1" in silent
    assert note_for(Whereabouts("running", "h1"), None, "a1") == ""


def test_only_the_host_itself_hears_its_log_requests_and_no_host_asks() -> None:
    """Tried: the NATS permissions of two hosts. Must hold: each subscribes to its own log subject
    and not the other's, none may publish on any log subject, and each answers at most once."""
    a, b = host_permissions("host-a"), host_permissions("host-b")
    assert f"{LOG_TAIL}.host-a" in a["subscribe"]["allow"]
    assert f"{LOG_TAIL}.host-b" not in a["subscribe"]["allow"]
    assert f"{LOG_TAIL}.host-a" not in b["subscribe"]["allow"]
    for perms in (a, b):
        assert not any(s.startswith(LOG_TAIL) or s in (">", "potluck.>") for s in perms["publish"]["allow"])
        assert perms["allow_responses"]["max"] == 1
    # A real user key: one nats-server could not load is left out of the file (nats_auth).
    rendered = json.loads(render_authorization([], [("host-a", new_user_key().public)]))
    assert rendered["authorization"]["users"][0]["permissions"]["allow_responses"] == {
        "max": 1,
        "expires": "30s",
    }
