"""What the owner policy remembers (owner_policy.Memory), kept across a restart of hostd: pure.

The decision's hysteresis lives in its memory: a machine read hot stays throttled until it
cools 5 °C below the mark, and an owner who was busy keeps the pool throttled until idle for
`resume_after_idle_s`. A restarted hostd that forgot both would give the pool its share back
at once, at 82 °C of a max of 85, or seconds after the owner stopped typing, where the hostd
before it would have held it. So the memory goes into the status file hostd writes anyway
(policy_runner.py, at every change and every few seconds) and a new hostd starts from it.

The decision the hostd before applied last (the status file's "policy") is kept too: until the
new hostd's first decision it stands in for one (`remembered_decision`), so that what the new
hostd starts meanwhile is frozen or throttled as the pool is (containers.py).

Memory counts time on the monotonic clock, which means nothing to another process after a
reboot: the record says how long ago the owner was busy as of a wall-clock instant, and what
time passed since by the wall clock is added back (none when the clock went back).
"""

import math
import typing
from datetime import datetime
from typing import Any

from potluck.contracts.host_events import PolicyCause
from potluck.hostd.owner_policy import Decision, Memory

_CAUSES: tuple[PolicyCause, ...] = typing.get_args(PolicyCause)


def memory_record(memory: Memory, now_wall: datetime, now_mono: float) -> dict[str, Any]:
    """The memory as JSON can hold it, as of `now_wall` (the same instant as `now_mono`)."""
    busy_ago = None if memory.owner_busy_at is None else max(0.0, now_mono - memory.owner_busy_at)
    return {
        "at": now_wall.isoformat(),
        "hot": memory.hot,
        "owner_busy_ago_s": busy_ago,
        "owner_peak_cpus": memory.owner_peak_cpus,
    }


def memory_from_record(record: object, now_wall: datetime, now_mono: float) -> Memory:
    """The memory a record left, on this process's monotonic clock (`now_mono` being `now_wall`);
    an empty memory from a record that is missing or unreadable (an older hostd wrote none)."""
    if not isinstance(record, dict):
        return Memory()
    try:
        written = datetime.fromisoformat(str(record["at"]))
        hot = record.get("hot") is True
        ago = record.get("owner_busy_ago_s")
        peak = float(record.get("owner_peak_cpus") or 0.0)
        since = max(0.0, (now_wall - written).total_seconds())
    except (KeyError, TypeError, ValueError):
        return Memory()
    if not isinstance(ago, int | float) or not math.isfinite(ago) or ago < 0 or not math.isfinite(peak):
        return Memory(hot=hot)
    return Memory(owner_busy_at=now_mono - ago - since, owner_peak_cpus=peak, hot=hot)


def remembered_decision(record: object) -> Decision | None:
    """The decision a status file's "policy" says was applied, or None when it says none that
    holds anything (missing, unreadable, normal, or a share that is no number).

    Whatever its age: the decision it stands in for comes within seconds of the policy's start
    and replaces it whole, so an old freeze costs the pool those seconds at most, where one
    ignored as stale would hand the pool a machine whose member may still say no.
    """
    if not isinstance(record, dict):
        return None
    state, cause, share = record.get("state"), record.get("cause"), record.get("share_cpus")
    reason = str(record.get("reason") or "")
    known = next((c for c in _CAUSES if c == cause), None)
    if state == "frozen":
        return Decision(state="frozen", cause=known, reason=reason, share_cpus=0.0)
    if state == "throttled" and isinstance(share, int | float) and math.isfinite(share) and share >= 0:
        return Decision(state="throttled", cause=known, reason=reason, share_cpus=float(share))
    return None
