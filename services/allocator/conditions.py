"""What its host does to an active allocation, as its user is told. Pure.

An allocation keeps its own state (placed, pulling, running) while its host
sleeps, stops answering or is held back by its owner's policy: the kernel froze
its processes, or the owner's policy slowed or paused them, and they go on as
they were when the host comes back. What the user sees in the meantime is a
*condition* next to the state, derived from the host's state alone (so the
replay of the log gives the same as the running allocator):

- ``waiting_for_host`` (cause ``asleep`` or ``unreachable``): the host is away;
  since when it went.
- ``waiting_for_host`` (cause ``engine``): the host's hostd runs but its Docker
  engine stopped answering (HostEngineLost); the container may have stopped with
  it, and hostd takes it up when the engine returns; since when.
- ``draining`` (cause ``member``): the member is taking the host out of the
  pool; the container is stopped at ``until`` (the end of the drain's grace)
  unless it ends first.
- ``frozen`` (cause ``member``): the member paused the host (`potluck host
  pause`); its containers are frozen until the member resumes it.
- ``frozen`` / ``throttled`` (cause ``owner``, ``battery``, ``heat`` or
  ``window``): the member's owner policy paused the pool's containers there, or
  cut them to ``share_cpus``; the policy's reason and since when.

Waiting comes first: a host that sleeps runs nothing, whatever its policy, and a host
away says so rather than what its engine did before it went. The
member's own word (drain, pause) comes before the policy's: it holds however the
policy would treat the machine.

`frozen_past_limit` says when a frozen host has kept an allocation frozen past
the member's `max_frozen_s` (HostFrozen): the allocator then marks it
(decisions.frozen_too_long), once per freeze.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from potluck.contracts.host_events import PolicyCause
from potluck.readmodels.allocations import ACTIVE, AllocationState
from potluck.readmodels.hosts import HostState

__all__ = ["CAUSES", "ConditionCause", "ConditionState", "HostCondition", "condition_of", "frozen_past_limit"]

ConditionState = Literal["waiting_for_host", "draining", "throttled", "frozen"]
ConditionCause = Literal["asleep", "unreachable", "engine", "member", "owner", "battery", "heat", "window"]
CAUSES: tuple[str, ...] = get_args(ConditionCause)

_AWAY = {
    "asleep": "its host is asleep; the container resumes as it was when the host wakes",
    "unreachable": "its host stopped answering; the container is kept for when it returns",
}
_ENGINE_AWAY = (
    "the Docker engine on its host stopped answering: nothing new starts there, and the "
    "container may have stopped with it; when the engine returns, its host starts an interactive "
    "container again (a task that stopped ends, stopped on its host)"
)
_POLICY = {
    "throttled": "the host's owner needs the machine; the pool gets less CPU there for now",
    "frozen": "the host's owner policy paused the pool's containers there for now",
}
_PAUSED = "the host's member paused it: the container is frozen until they resume it"
_DRAINING = (
    "the host's member is taking it out of the pool: the container is stopped when the drain's "
    "grace ends, unless it ends first"
)


@dataclass(frozen=True)
class HostCondition:
    state: ConditionState
    cause: ConditionCause
    #: For people: why (the owner policy's own words when it gave some).
    reason: str
    #: Since when the host is in this state (None only for hosts folded without a time).
    since: datetime | None
    #: While throttled: the CPUs the pool keeps on that host, all its allocations together.
    share_cpus: float | None = None
    #: While the host drains: when the container is stopped (the end of the drain's grace).
    until: datetime | None = None


def condition_of(state: AllocationState, host: HostState | None) -> HostCondition | None:
    """The condition of an active allocation on `host` (its host's state); None when the host
    runs it normally, or it is not active on a host."""
    if state.status not in ACTIVE or host is None or state.host_id != host.host_id:
        return None
    if host.waiting and host.liveness in ("asleep", "unreachable"):
        return HostCondition(
            state="waiting_for_host",
            cause=host.liveness,
            reason=_AWAY[host.liveness],
            since=host.liveness_since,
        )
    if host.engine_away:
        return HostCondition(
            state="waiting_for_host", cause="engine", reason=_ENGINE_AWAY, since=host.engine_away_since
        )
    if host.admin == "draining":
        started = host.drain_started_at
        return HostCondition(
            state="draining",
            cause="member",
            reason=_DRAINING,
            since=started,
            until=None if started is None else started + timedelta(seconds=host.drain_grace_s),
        )
    if host.admin == "paused":
        return HostCondition(state="frozen", cause="member", reason=_PAUSED, since=host.paused_at)
    if host.policy == "normal":
        return None
    cause: PolicyCause = host.policy_cause or "owner"
    return HostCondition(
        state=host.policy,
        cause=cause,
        reason=host.policy_reason or _POLICY[host.policy],
        since=host.policy_since,
        share_cpus=host.policy_share_cpus if host.policy == "throttled" else None,
    )


def frozen_past_limit(state: AllocationState, host: HostState | None, now: datetime) -> float | None:
    """How long `host` has kept the active allocation frozen at `now` (seconds), when that is past
    the member's `max_frozen_s` and it has not been marked for this freeze yet; else None.

    One mark per freeze: a host that resumes and freezes again has a new `policy_since`.
    """
    if state.status not in ACTIVE or host is None or state.host_id != host.host_id:
        return None
    if host.policy != "frozen" or host.policy_since is None or host.policy_max_frozen_s is None:
        return None
    frozen_s = (now - host.policy_since).total_seconds()
    if frozen_s <= host.policy_max_frozen_s:
        return None
    mark = state.frozen_too_long
    if mark is not None and mark.frozen_since == host.policy_since:
        return None
    return frozen_s
