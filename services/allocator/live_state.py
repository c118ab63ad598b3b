"""The allocator's answer to ALLOCATOR_STATE: its read models as of its position, for `replay --check`,
and the events it could not read (`skipped`), for `potluck ops status`.

Its models can outgrow any one NATS message (100,000 allocations are some
100 MB of JSON), so it answers counts, digests, one bucket's row digests or
one page of rows at a time (potluck.readmodels.state_pages), each with its
position."""

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.msg import Msg

from potluck.allocator.canonical import allocation_as_dict, capacity_as_dict, job_as_dict
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import SERVICE_INBOX
from potluck.events.replies import ReplyGuard
from potluck.readmodels.digests import Keyed, keyed
from potluck.readmodels.hosts import host_as_dict
from potluck.readmodels.state_pages import BadStateRequest, answer_state_request_yielding

if TYPE_CHECKING:
    from potluck.allocator.engine import AllocatorEngine

__all__ = ["allocator_models", "allocator_state", "state_responder"]

log = structlog.get_logger(__name__)


def allocator_models(engine: "AllocatorEngine") -> dict[str, Keyed]:
    """Each read model, by key, in the canonical form replay gives (potluck.allocator.canonical);
    rows are computed only when asked for."""
    # Copies of the maps, at this instant: the states in them are immutable, so rows computed later
    # (while the allocator goes on folding) are still those of this position.
    hosts = dict(engine.hosts.hosts)
    allocations = dict(engine.allocations.allocations)
    users = dict(engine.users.users)
    jobs = dict(engine.model.jobs.jobs)

    def allocation(alloc_id: str) -> dict[str, Any]:
        state = allocations[alloc_id]
        return allocation_as_dict(state, hosts.get(state.host_id) if state.host_id else None)

    return {
        "hosts": Keyed(list(hosts), lambda h: host_as_dict(hosts[h])),
        # One row per host, holdings only of live allocations: bounded by the hosts, built whole.
        "capacity": keyed(capacity_as_dict(engine.hosts, engine.ledger)),
        "allocations": Keyed(list(allocations), allocation),
        "users": Keyed(list(users), lambda u: {"user": u, "quota": users[u].quota.model_dump(mode="json")}),
        "jobs": Keyed(list(jobs), lambda j: job_as_dict(jobs[j])),
    }


async def allocator_state(engine: "AllocatorEngine", request: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer to one request (state_pages.py) as of `engine.position`, with what the allocator
    skipped as unreadable. BadStateRequest for a request it cannot answer.

    Position, models and skipped are taken at one instant; digesting every row then lets the
    loop run (placements go on), over that snapshot."""
    position, event_id = engine.position, engine.fold.last_event_id
    models = allocator_models(engine)
    # Not a read model: the events this allocator could not read (count and the latest).
    skipped = engine.fold.skipped.as_dict()
    answer = await answer_state_request_yielding(request or {}, models)
    # Not a read model either: the retention window it folds with, for the replay to fold alike.
    return {
        "position": position,
        "event_id": event_id,
        **answer,
        "skipped": skipped,
        "retention_s": engine.retention_s,
    }


def _request_of(data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        request = json.loads(data)
    except ValueError as exc:
        raise BadStateRequest(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadStateRequest('the request must be a JSON object, e.g. {} or {"digests": true}')
    return request


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
            try:
                reply = Reply(ok=True, data=await allocator_state(engine, _request_of(msg.data)))
            except BadStateRequest as exc:
                log.info("allocator.state_request_refused", error=str(exc))
                reply = Reply(ok=False, error={"code": "BAD_REQUEST", "message": str(exc)})
        await msg.respond(reply.model_dump_json().encode())

    return respond
