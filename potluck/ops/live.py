"""The live read models of the running services, for `replay --check`.

The registry answers `potluck.rpc.registry.hosts` (LIST_HOSTS) with its
hosts and the log position its view has folded. The allocator answers
`potluck.rpc.allocator.state` (ALLOCATOR_STATE) with its hosts, capacity
ledger, allocations and users in the canonical form of potluck.projections
(`allocator_state` builds that answer; the allocator subscribes
`state_responder(engine)` to the subject). Both answers are computed in one
step of the event loop, so the position and the models belong together.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from potluck.ops import LiveUnavailable
from potluck.projections import canonical
from potluck.registry.messages import LIST_HOSTS, Reply

if TYPE_CHECKING:
    from potluck.allocator.engine import AllocatorEngine

__all__ = [
    "ALLOCATOR_STATE",
    "LiveModel",
    "allocator_state",
    "fetch_allocator",
    "fetch_registry",
    "state_responder",
]

#: Operators and services only (hosts may publish only on subjects ending in their own id).
ALLOCATOR_STATE = "potluck.rpc.allocator.state"


def allocator_state(engine: "AllocatorEngine") -> dict[str, Any]:
    """The allocator's read models as of `engine.position`, in the canonical form replay gives."""
    return {
        "position": engine.position,
        **canonical(
            hosts=engine.hosts,
            ledger=engine.ledger,
            allocations=engine.allocations,
            users=engine.users,
        ),
    }


def state_responder(engine: "AllocatorEngine") -> Callable[[Msg], Awaitable[None]]:
    """The NATS callback answering ALLOCATOR_STATE requests from `engine`."""

    async def respond(msg: Msg) -> None:
        if not msg.reply:
            return
        if not engine.ready.is_set():
            reply = Reply(ok=False, error={"code": "NOT_READY", "message": "the allocator is still loading"})
        else:
            reply = Reply(ok=True, data=allocator_state(engine))
        await msg.respond(reply.model_dump_json().encode())

    return respond


@dataclass(frozen=True)
class LiveModel:
    """What one running service holds: its position in the log and its models (canonical form)."""

    service: str
    position: int
    models: dict[str, Any]


async def _ask(nc: NATS, subject: str, service: str, timeout: float) -> dict[str, Any]:
    try:
        msg = await nc.request(subject, b"{}", timeout=timeout)
    except nats.errors.NoRespondersError:
        raise LiveUnavailable(
            f"no {service} answered on {subject}: is it running (and new enough to answer)?"
        ) from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise LiveUnavailable(f"the {service} did not answer on {subject} within {timeout:g}s") from None
    try:
        reply = Reply.model_validate_json(msg.data)
    except ValueError as exc:
        raise LiveUnavailable(f"the {service} answered {subject} with something unreadable: {exc}") from None
    if not reply.ok:
        error = reply.error or {}
        raise LiveUnavailable(f"the {service} refused: {error.get('message')} ({error.get('code')})")
    return reply.data


async def fetch_registry(nc: NATS, timeout: float = 5.0) -> LiveModel:
    data = await _ask(nc, LIST_HOSTS, "registry", timeout)
    hosts: dict[str, Any] = {}
    for row in data.get("hosts", []):
        row = dict(row)
        row.pop("last_seen_s_ago", None)  # not a fact of the log
        hosts[str(row["host_id"])] = row
    return LiveModel("registry", int(data.get("position", 0)), {"hosts": _plain(hosts)})


async def fetch_allocator(nc: NATS, timeout: float = 5.0) -> LiveModel:
    data = dict(await _ask(nc, ALLOCATOR_STATE, "allocator", timeout))
    position = int(data.pop("position", 0))
    return LiveModel("allocator", position, _plain(data))


def _plain(value: Any) -> Any:
    """Through JSON and back, as a reply travels: the form both sides are compared in."""
    return json.loads(json.dumps(value))
