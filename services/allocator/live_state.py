"""The allocator's answer to ALLOCATOR_STATE: its read models as of its position, for `replay --check`,
and the events it could not read (`skipped`), for `potluck ops status`."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from potluck.allocator.canonical import canonical
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import SERVICE_INBOX
from potluck.events.replies import ReplyGuard

if TYPE_CHECKING:
    from potluck.allocator.engine import AllocatorEngine

__all__ = ["allocator_state", "state_responder"]


def allocator_state(engine: "AllocatorEngine") -> dict[str, Any]:
    """The allocator's read models as of `engine.position`, in the canonical form replay gives,
    and what it skipped as unreadable."""
    return {
        "position": engine.position,
        **canonical(
            hosts=engine.hosts,
            ledger=engine.ledger,
            allocations=engine.allocations,
            users=engine.users,
            jobs=engine.model.jobs,
        ),
        # Not a read model: the events this allocator could not read (count and the latest).
        "skipped": engine.fold.skipped.as_dict(),
    }


def state_responder(
    engine: "AllocatorEngine", guard: ReplyGuard | None = None
) -> Callable[[Msg], Awaitable[None]]:
    """The NATS callback answering ALLOCATOR_STATE requests from `engine`, only into the services'
    inbox: only services may ask, and the answer goes out with the allocator's identity."""
    guard = guard or ReplyGuard("allocator")

    async def respond(msg: Msg) -> None:
        if not guard.allows(msg, SERVICE_INBOX, requester="services"):
            return
        if not engine.ready.is_set():
            reply = Reply(ok=False, error={"code": "NOT_READY", "message": "the allocator is still loading"})
        else:
            reply = Reply(ok=True, data=allocator_state(engine))
        await msg.respond(reply.model_dump_json().encode())

    return respond
