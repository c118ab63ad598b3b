"""An allocation page's live log tail: server-sent events fed by polling the allocation's host.

The allocator cannot read a container's log: it lives on the member's machine.
So each open page's stream asks the allocation's host for the lines after its
cursor (potluck.contracts.log_tail, over NATS: `potluck.logs.<host_id>`) about
once a second, and sends what is new as a `lines` event whose id is the cursor:
a browser that reconnects sends it back (`Last-Event-ID`) and goes on where it
was, without repeating lines. When there is nothing to show, a `note` event
says why in words (not placed yet, host silent, container removed), and the
stream keeps asking, more slowly; it never hangs on a host that does not answer
(each request has its own timeout).

Who may open the stream is the page's business (routes.py: the owner or an
operator, 404 otherwise); this module only follows the host it is told.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from potluck.allocator.web.live import (
    KEEPALIVE_S,
    Changes,
    changed_or_gone,
    gone,
    signed_out_event,
    sse_event,
)
from potluck.contracts.log_tail import ANSWER_BUDGET, LogCursor, LogTailPage, LogTailRequest, out_of_bounds
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import LOG_TAIL, host_subject
from potluck.readmodels.allocations import TERMINAL

__all__ = ["LogSource", "LogUnavailable", "Whereabouts", "follow_log", "note_for"]

log = structlog.get_logger(__name__)

#: How often an open page asks for new lines, and how often while there is nothing to read.
POLL_S = 1.0
IDLE_POLL_S = 5.0
#: How long a host has to answer one request.
REQUEST_TIMEOUT_S = 3.0
#: The lines a page opens with.
FIRST_LINES = 100


#: Of a host's refusal, what the allocator keeps (and logs): hostd's codes are short words, and
#: its messages a line; a host could answer with up to NATS' payload (1 MiB) each poll.
MAX_CODE_CHARS = 32
MAX_MESSAGE_CHARS = 300


class LogUnavailable(Exception):
    """The host could not give the log; `code` says why (NOT_HERE, SILENT, ENGINE, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LogSource:
    """Asks hosts over NATS (the allocator's own connection, which may publish anywhere)."""

    def __init__(self, nc: NATS, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.nc = nc
        self.timeout = timeout

    async def page(self, host_id: str, request: LogTailRequest) -> LogTailPage:
        subject = host_subject(LOG_TAIL, host_id)
        try:
            msg = await self.nc.request(subject, request.model_dump_json().encode(), timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise LogUnavailable("SILENT", "not connected") from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise LogUnavailable("SILENT", "no answer") from None
        except nats.errors.Error as exc:
            raise LogUnavailable("BUS", str(exc)) from None
        if len(msg.data) > ANSWER_BUDGET:
            # Refused unread: any member's hostd may answer, with up to NATS' payload (1 MiB) a
            # poll of every open page, which the allocator would parse, hold and send on.
            raise LogUnavailable("TOO_LARGE", f"an answer of {len(msg.data)} bytes, past {ANSWER_BUDGET}")
        try:
            reply = Reply.model_validate_json(msg.data)
            if not reply.ok:
                error = reply.error or {}
                # A host's words, bound for the allocator's log: any member's hostd may answer.
                code, message = str(error.get("code"))[:MAX_CODE_CHARS], str(error.get("message"))
                raise LogUnavailable(code, message[:MAX_MESSAGE_CHARS])
            page = LogTailPage.model_validate(reply.data)
        except ValidationError as exc:
            raise LogUnavailable("BAD_ANSWER", str(exc)[:200]) from None
        problem = out_of_bounds(page, request.tail)
        if problem is not None:
            raise LogUnavailable("BAD_ANSWER", problem)
        return page


@dataclass(frozen=True)
class Whereabouts:
    """Where the allocation is as the fold has it now."""

    status: str
    host_id: str | None


def note_for(where: Whereabouts, code: str | None, alloc_id: str) -> str:
    """What the page says when it has no lines to show: why, and what still works."""
    if where.host_id is None:
        return "No container yet: the allocation waits for a host. Its log shows here once it starts."
    host = where.host_id
    if code is None:
        return ""
    if code == "NOT_HERE":
        if where.status in ("placed", "pulling"):
            return f"The container is not started yet on host {host}; its log shows here once it is."
        if where.status == "running":
            return f"Host {host} has no container of this allocation (yet); asking again."
        return (
            f"The container is gone from host {host} (removed when the allocation ended); "
            "its log went with it."
        )
    if code == "SILENT":
        return (
            f"Host {host} does not answer now (asleep, offline or unreachable); "
            f"the log shows again when it does. `potluck logs {alloc_id}` reads it then too."
        )
    if code == "UNAVAILABLE":
        return f"This allocator cannot reach hosts for logs; `potluck logs {alloc_id}` reads it."
    return f"Host {host} could not read the log now; asking again. `potluck logs {alloc_id}` may say more."


async def follow_log(
    request: web.Request,
    changes: Changes,
    source: LogSource | None,
    alloc_id: str,
    where: Callable[[], Whereabouts | None],
    signed_in: Callable[[], bool],
) -> web.StreamResponse:
    """Send the allocation's log, then its new lines, until the browser goes away, the session
    ends (`signed_in` says no: then a `signed-out` event) or the allocation is no longer the
    session's to see."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    cursor = LogCursor.decode(request.headers.get("Last-Event-ID", ""))
    host_now: str | None = None
    shown_note: str | None = None
    quiet_since = asyncio.get_running_loop().time()
    try:
        while not changes.closed and not gone(request):
            if not signed_in():
                await response.write(signed_out_event())
                break
            now = where()
            if now is None:  # no longer the session's to see (an operator's view of one gone)
                break
            if now.host_id != host_now:  # placed (again): another container, another log
                host_now, cursor = now.host_id, None if host_now is not None else cursor
            code: str | None = None
            page: LogTailPage | None = None
            if now.host_id is not None:
                if source is None:
                    code = "UNAVAILABLE"
                else:
                    ask = LogTailRequest(alloc_id=alloc_id, after=cursor, tail=FIRST_LINES)
                    try:
                        page = await source.page(now.host_id, ask)
                    except LogUnavailable as exc:
                        code = exc.code
                        if exc.code not in ("NOT_HERE", "SILENT"):
                            log.warning(
                                "web.log_tail_failed", alloc_id=alloc_id, code=exc.code, error=exc.message
                            )
            note = note_for(now, code, alloc_id) if page is None else ""
            if note != (shown_note or ""):
                shown_note = note
                await response.write(sse_event("note", note))
            if page is not None and page.lines:
                cursor = page.cursor
                body = {"skipped": page.skipped, "lines": [[line.stream, line.text] for line in page.lines]}
                event_id = cursor.encode() if cursor is not None else None
                # As UTF-8, as it came: `\uXXXX` escapes would send up to three times the page.
                await response.write(sse_event("lines", json.dumps(body, ensure_ascii=False), event_id))
                quiet_since = asyncio.get_running_loop().time()
            elif asyncio.get_running_loop().time() - quiet_since > KEEPALIVE_S:
                await response.write(b": still here\n\n")
                quiet_since = asyncio.get_running_loop().time()
            if page is not None:
                await asyncio.sleep(POLL_S)
            else:  # nothing to read: ask again later, or soon after the allocation moves
                ended = code == "NOT_HERE" and now.status in TERMINAL
                wait = KEEPALIVE_S if ended else IDLE_POLL_S
                await changed_or_gone(request, changes, changes.count, wait, signed_in)
                await asyncio.sleep(POLL_S)  # a busy pool never makes a page ask more than once a second
    except ConnectionResetError:
        pass  # the browser went away
    return response
