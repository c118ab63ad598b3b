"""The live read models of the running services, for `replay --check`.

The registry answers LIST_HOSTS with its hosts and the log position its view
has folded. The allocator answers ALLOCATOR_STATE with its hosts, capacity
ledger, allocations and users in the canonical form (potluck.allocator.live_state).
Both answers are computed in one step of the event loop, so the position and
the models belong together.

Each answer also says which events the service skipped because it could not
decode them (`"skipped": {"count": N, "recent": [...]}`): not a model to
compare with a replay, but what `potluck ops status --live` shows, so it is
kept apart on `LiveModel`. A service too old to say leaves it None.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import ALLOCATOR_STATE, LIST_HOSTS
from potluck.ops import LiveUnavailable

__all__ = ["LiveModel", "fetch_allocator", "fetch_registry"]


@dataclass(frozen=True)
class LiveModel:
    """What one running service holds: its position in the log and its models (canonical form)."""

    service: str
    position: int
    models: dict[str, Any]
    #: How many events the service could not decode and skipped (None: it did not say).
    skipped: int | None = None
    #: The last of those it remembers: position, stream, type and error of each.
    skipped_recent: list[dict[str, Any]] = field(default_factory=list)


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


def _skipped(data: dict[str, Any]) -> tuple[int | None, list[dict[str, Any]]]:
    """Take the `skipped` report out of an answer: (count, recent), (None, []) when absent."""
    skipped = data.pop("skipped", None)
    if not isinstance(skipped, dict):
        return None, []
    recent = skipped.get("recent")
    return int(skipped.get("count", 0)), _plain(recent) if isinstance(recent, list) else []


async def fetch_registry(nc: NATS, timeout: float = 5.0) -> LiveModel:
    data = dict(await _ask(nc, LIST_HOSTS, "registry", timeout))
    skipped, recent = _skipped(data)
    hosts: dict[str, Any] = {}
    for row in data.get("hosts", []):
        row = dict(row)
        row.pop("last_seen_s_ago", None)  # not a fact of the log
        hosts[str(row["host_id"])] = row
    return LiveModel("registry", int(data.get("position", 0)), {"hosts": _plain(hosts)}, skipped, recent)


async def fetch_allocator(nc: NATS, timeout: float = 5.0) -> LiveModel:
    data = dict(await _ask(nc, ALLOCATOR_STATE, "allocator", timeout))
    position = int(data.pop("position", 0))
    skipped, recent = _skipped(data)
    return LiveModel("allocator", position, _plain(data), skipped, recent)


def _plain(value: Any) -> Any:
    """Through JSON and back, as a reply travels: the form both sides are compared in."""
    return json.loads(json.dumps(value))
