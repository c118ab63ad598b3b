"""Answers to NATS requests: a handler's result or refusal as one `Reply`, errors by stable code.

Like the allocator's error middleware for HTTP, one place maps what a handler
raises to what the requester reads: a request that does not validate is
BAD_REQUEST (naming the first bad field), a refusal of the aggregate keeps its
own code (NOT_ENROLLED, NOT_REGISTERED, BUSY, ...), and anything else is
INTERNAL, logged with its traceback, and the registry goes on serving.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import host_of
from potluck.kernel.rejections import Rejected

__all__ = ["HostHandler", "answer", "first_error", "on_host_request", "respond"]

log = structlog.get_logger(__name__)

#: A request about one host (its id is the subject's last token) and its payload, to the answer's data.
HostHandler = Callable[[str, bytes], Awaitable[dict[str, Any]]]


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(body)"
    return f"{loc}: {err['msg']}"


async def answer(msg: Msg, reply: Reply) -> None:
    if msg.reply:
        await msg.respond(reply.model_dump_json().encode())


async def respond(msg: Msg, handler: HostHandler) -> None:
    """Run `handler` for the host the subject names and answer with its data or its error."""
    try:
        reply = Reply(ok=True, data=await handler(host_of(msg.subject), msg.data))
    except ValidationError as exc:
        reply = Reply(ok=False, error={"code": "BAD_REQUEST", "message": first_error(exc)})
    except Rejected as exc:
        reply = Reply(ok=False, error=exc.as_dict())
    except Exception as exc:
        log.exception("registry.request_failed", subject=msg.subject)
        reply = Reply(ok=False, error={"code": "INTERNAL", "message": f"registry failed: {exc!r}"})
    await answer(msg, reply)


def on_host_request(handler: HostHandler) -> Callable[[Msg], Awaitable[None]]:
    """The NATS callback answering requests with `handler`."""

    async def callback(msg: Msg) -> None:
        await respond(msg, handler)

    return callback
