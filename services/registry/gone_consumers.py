"""Which hosts' JetStream consumers to remove: the pure decision of the registry's consumer sweep.

Each registered host has a durable consumer on the events stream (`host_consumer`), made by
the registry when the host registers. Once the host is out of the pool (deregistered, left,
revoked) nothing reads it any more, yet the server would keep it, and its state, for ever.

A consumer is removed only when the log says its host is out: a name that no folded host
owns, or whose host is asleep, unreachable, paused or draining, is kept. The host's hostd
learns that it is out through that very consumer (HostLeft makes it stop for good), so the
consumer stays until hostd has acknowledged the event that put the host out, or, for a hostd
that never will (offline, or its key already refused), until `grace_s` has passed since it.
A deregistered host that registers again is active again, and its consumer is made anew: a
consumer made after its host went out belongs to that return and is kept, even while the
view, a moment behind the log, still says the host is out.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from potluck.contracts.subjects import host_consumer
from potluck.readmodels.hosts import AdminState, HostState

__all__ = ["OUT_EVENT", "Candidate", "candidates", "host_of_consumer", "to_remove"]

#: The admin states of a host that is out of the pool, and the event that put it there.
OUT_EVENT: Mapping[AdminState, str] = {
    "deregistered": "HostDeregistered",
    "left": "HostLeft",
    "revoked": "HostRevoked",
}


def host_of_consumer(name: str) -> str | None:
    """The host whose consumer `name` is, or None for a consumer that is not a host's."""
    prefix = host_consumer("")
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    host_id = name[len(prefix) :]
    return host_id if host_consumer(host_id) == name else None


@dataclass(frozen=True)
class Candidate:
    """A consumer on the server whose host the log says is out, since `since`."""

    consumer: str
    host_id: str
    out_event: str
    since: datetime | None


def candidates(hosts: Mapping[str, HostState], consumers: Mapping[str, datetime | None]) -> list[Candidate]:
    """The consumers among `consumers` (name on the server: when it was made) whose host is out
    of the pool, and which were made before it went out."""
    found = []
    for name in sorted(consumers):
        host_id = host_of_consumer(name)
        state = None if host_id is None else hosts.get(host_id)
        if state is None or state.admin not in OUT_EVENT:
            continue
        since, created = state.changed_at, consumers[name]
        if since is not None and created is not None and created > since:
            continue
        found.append(Candidate(name, state.host_id, OUT_EVENT[state.admin], since))
    return found


def to_remove(
    found: Iterable[Candidate], acknowledged: Mapping[str, bool], now: datetime, grace_s: float
) -> list[Candidate]:
    """The candidates to remove now: hostd acknowledged the event that put its host out
    (`acknowledged[consumer]`), or `grace_s` has passed since that event."""
    return [
        c
        for c in found
        if acknowledged.get(c.consumer, False)
        or (c.since is not None and (now - c.since).total_seconds() >= grace_s)
    ]
