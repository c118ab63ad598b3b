"""A container's log tail for the web page: what the allocator asks a host, and what it answers.

The allocator asks `potluck.logs.<host_id>` (subjects.LOG_TAIL) for the lines of
one allocation's container after a cursor; the host answers one bounded page
(`LogTailPage`), never a stream: a page open in a browser polls, and a poll that
finds nothing new costs one small request. Only services may ask (no host may
publish there, nats_auth), and only the host itself subscribes there.

Why a cursor of (timestamp, count) rather than an offset: the engine's log API
filters by time (`since`, inclusive) and not by byte offset, and two lines may
carry the same nanosecond. So the cursor names the last line's timestamp and
how many lines of that timestamp were already sent; the host skips those.

Bounds: at most MAX_LINES lines a page (and no more than the request's `tail`),
each cut to MAX_LINE_CHARS, and the page's JSON within PAGE_BUDGET bytes of
UTF-8 (oldest lines dropped first), far below NATS's 1 MB payload. Lines left
out between the cursor and the page (a container printing faster than the page
polls) are flagged, not hidden: `potluck logs` has them all. The host fits its
pages to them (`fit_page`); the allocator holds any host to them
(`ANSWER_BUDGET`, `out_of_bounds`), for any member's hostd may answer.
"""

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from potluck.kernel.digits import is_digits

__all__ = [
    "ANSWER_BUDGET",
    "MAX_LINES",
    "MAX_LINE_CHARS",
    "PAGE_BUDGET",
    "LogCursor",
    "LogLine",
    "LogTailPage",
    "LogTailRequest",
    "after_cursor",
    "fit_page",
    "out_of_bounds",
    "since_parameter",
]

MAX_LINES = 200
MAX_LINE_CHARS = 2000
PAGE_BUDGET = 256 * 1024
#: An engine's timestamp, RFC 3339 with nanoseconds: 30 characters.
MAX_AT_CHARS = 40
#: The largest answer to a request a host may send: a page within PAGE_BUDGET and the reply
#: around it (messages.Reply's few fields).
ANSWER_BUDGET = PAGE_BUDGET + 4096


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's


class LogCursor(_Message):
    #: The engine's timestamp of the last line sent (RFC 3339, nanoseconds, UTC: they sort as text).
    at: str = Field(max_length=MAX_AT_CHARS)
    #: How many lines with exactly that timestamp were sent.
    same: int = Field(ge=1)

    def encode(self) -> str:
        """As an SSE event id, which the browser sends back on reconnecting."""
        return f"{self.at}|{self.same}"

    @classmethod
    def decode(cls, text: str) -> "LogCursor | None":
        """The cursor an SSE event id holds; None when it holds none (the browser starts afresh)."""
        at, sep, same = text.partition("|")
        if not sep or not is_digits(same):
            return None
        try:
            since_parameter(at)
            return cls(at=at, same=int(same))
        except ValueError:
            return None


class LogTailRequest(_Message):
    alloc_id: str = Field(min_length=1, max_length=64)
    #: Continue after this line; None: the last `tail` lines.
    after: LogCursor | None = None
    tail: int = Field(default=100, ge=1, le=MAX_LINES)


class LogLine(_Message):
    at: str
    stream: Literal["stdout", "stderr"]
    text: str


class LogTailPage(_Message):
    lines: list[LogLine] = Field(default_factory=list)
    #: Where the next request continues (the request's own cursor when nothing is new).
    cursor: LogCursor | None = None
    #: Lines between the request's cursor and these were left out.
    skipped: bool = False


def since_parameter(at: str) -> str:
    """The engine's `since` for an RFC 3339 timestamp: `seconds.nanoseconds`, exactly.

    Python's datetime keeps microseconds only, so the fraction is carried as text.
    """
    if not at.endswith("Z") or "T" not in at:
        raise ValueError(f"{at!r} is not a UTC RFC 3339 timestamp")
    whole, _, fraction = at[:-1].partition(".")
    if fraction and (not is_digits(fraction) or len(fraction) > 9):
        raise ValueError(f"{at!r} has a bad fraction of a second")
    seconds = int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return f"{seconds}.{fraction.ljust(9, '0')}"


def after_cursor(lines: list[LogLine], cursor: LogCursor | None) -> list[LogLine]:
    """The lines not sent yet: later than the cursor, or of its timestamp beyond the `same` sent."""
    if cursor is None:
        return list(lines)
    out: list[LogLine] = []
    same_seen = 0
    for line in lines:
        if line.at < cursor.at:
            continue
        if line.at == cursor.at:
            same_seen += 1
            if same_seen <= cursor.same:
                continue
        out.append(line)
    return out


def _cursor_of(lines: list[LogLine], previous: LogCursor | None) -> LogCursor | None:
    if not lines:
        return previous
    last = lines[-1].at
    same = sum(1 for line in lines if line.at == last)
    if previous is not None and previous.at == last:
        same += previous.same
    return LogCursor(at=last, same=same)


def fit_page(
    lines: list[LogLine], cursor: LogCursor | None, limit: int, skipped: bool = False
) -> LogTailPage:
    """A page of the newest of `lines` (all after `cursor`, oldest first): at most `limit` of them,
    each cut to MAX_LINE_CHARS, within PAGE_BUDGET; `skipped` if any were left out."""
    if len(lines) > limit:
        lines, skipped = lines[-limit:], True
    kept: list[LogLine] = []
    size = 0
    for line in reversed(lines):
        if len(line.text) > MAX_LINE_CHARS:
            line = line.model_copy(update={"text": line.text[:MAX_LINE_CHARS] + "…"})
        # Bytes, not characters: a line of emoji or of U+FFFD (what a binary's output decodes
        # to) is three or four times as long on the wire as it counts in characters.
        size += len(line.model_dump_json().encode()) + 1
        if size > PAGE_BUDGET - 1024:
            skipped = True
            break
        kept.append(line)
    kept.reverse()
    # The cursor moves past every line considered, sent or left out: the next page goes on from here.
    return LogTailPage(lines=kept, cursor=_cursor_of(lines, cursor), skipped=skipped)


def out_of_bounds(page: LogTailPage, tail: int) -> str | None:
    """What in `page`, the answer to a request for `tail` lines, is past the bounds above (no
    page of `fit_page` is); None when nothing is."""
    if len(page.lines) > tail:
        return f"{len(page.lines)} lines where at most {tail} were asked for"
    for line in page.lines:
        if len(line.text) > MAX_LINE_CHARS + 1:  # the cut one's "…"
            return f"a line of {len(line.text)} characters, past {MAX_LINE_CHARS}"
        if len(line.at) > MAX_AT_CHARS:
            return f"a line's time of {len(line.at)} characters"
    return None
