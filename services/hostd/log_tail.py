"""hostd's answer to a log-tail request (potluck.contracts.log_tail): one page of a container's log.

The allocator's web page asks on `potluck.logs.<this host>`, which only this
host may subscribe to and only services may publish on (nats_auth); the reply
goes only into the services' inbox (ReplyGuard). The allocation must have its
container here, labelled for this host (ExecBridge.container_for): any other is
refused with NOT_HERE, exactly as one that never existed, running or stopped.

The engine is asked for `timestamps=1`, the last `tail + 1` lines `since` the
cursor (inclusive, so lines already sent come again and are skipped): one line
more than a page holds, so that a page knows it left lines out. Its answer is
read whole but bounded (READ_LIMIT); each frame of the multiplexed stream is one
log entry, `<timestamp> <text>`.
"""

import asyncio

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from potluck.contracts.log_tail import (
    LogLine,
    LogTailPage,
    LogTailRequest,
    after_cursor,
    fit_page,
    since_parameter,
)
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import SERVICE_INBOX, host_of
from potluck.events.replies import ReplyGuard
from potluck.hostd.engine_stream import EngineStream, open_stream
from potluck.hostd.exec_bridge import ExecBridge
from potluck.hostd.exec_errors import ExecError, ExecRefused
from potluck.hostd.exec_stream import FRAME_HEADER

__all__ = ["READ_LIMIT", "LogTailResponder", "parse_entries"]

log = structlog.get_logger(__name__)

#: At most this much of the engine's answer is read (the engine splits lines at 16 KiB).
READ_LIMIT = 4 * 1024 * 1024


def parse_entries(body: bytes) -> list[LogLine]:
    """The log entries of a multiplexed, timestamped answer; a cut last frame is left out."""
    lines: list[LogLine] = []
    pos = 0
    while pos + FRAME_HEADER.size <= len(body):
        stream, size = FRAME_HEADER.unpack_from(body, pos)
        start = pos + FRAME_HEADER.size
        if start + size > len(body):
            break
        entry = body[start : start + size].decode(errors="replace")
        pos = start + size
        at, _, text = entry.partition(" ")
        lines.append(LogLine(at=at, stream="stderr" if stream == 2 else "stdout", text=text.rstrip("\n")))
    return lines


class _Collect(EngineStream):
    def __init__(self, path: str) -> None:
        super().__init__(path, "the container's log")
        self.body = bytearray()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def body_received(self, data: bytes) -> None:
        self.body += data
        if len(self.body) >= READ_LIMIT and self.transport is not None:
            self.transport.close()  # enough: what came is parsed, a cut last frame dropped

    def body_ended(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class LogTailResponder:
    def __init__(self, bridge: ExecBridge, timeout: float = 5.0) -> None:
        self.bridge = bridge
        self.timeout = timeout
        self.replies = ReplyGuard("hostd")

    async def page(self, request: LogTailRequest) -> LogTailPage:
        """The page `request` asks for; ExecRefused if the allocation has no container here."""
        container_id = await self.bridge.container_for(request.alloc_id, stopped_ok=True)
        query = f"stdout=1&stderr=1&timestamps=1&tail={request.tail + 1}"
        if request.after is not None:
            query += f"&since={since_parameter(request.after.at)}"
        stream = _Collect(f"/containers/{container_id}/logs?{query}")
        status, message = await open_stream(self.bridge.docker_url, stream, self.timeout)
        if status != 200:
            raise ExecError(f"the container's log: {status} {message}")
        try:
            async with asyncio.timeout(self.timeout):
                await stream.ended
        finally:
            if stream.transport is not None:
                stream.transport.close()
        fresh = after_cursor(parse_entries(bytes(stream.body)), request.after)
        return fit_page(fresh, request.after, request.tail)

    async def answer(self, msg: Msg) -> None:
        """The subscription's callback (nats-py takes only a coroutine function)."""
        if not self.replies.allows(msg, SERVICE_INBOX, requester="services"):
            return
        try:
            request = LogTailRequest.model_validate_json(msg.data)
            page = await self.page(request)
            reply = Reply(ok=True, data=page.model_dump(mode="json"))
        except ValidationError as exc:
            reply = Reply(ok=False, error={"code": "INVALID_REQUEST", "message": str(exc)[:500]})
        except ExecRefused as exc:
            reply = Reply(ok=False, error={"code": "NOT_HERE", "message": str(exc)})
        except (ExecError, TimeoutError, ValueError) as exc:
            log.warning("hostd.log_tail_failed", subject=msg.subject, error=str(exc))
            reply = Reply(ok=False, error={"code": "ENGINE", "message": f"the engine: {exc}"})
        await msg.respond(reply.model_dump_json().encode())
        log.debug("hostd.log_tail_answered", host_id=host_of(msg.subject), ok=reply.ok)
