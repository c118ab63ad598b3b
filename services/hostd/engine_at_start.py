"""A Docker engine not running when hostd starts: the machine joins the pool as engine away.

Members start hostd before Docker often enough (Docker Desktop not opened yet, dockerd
stopped, a boot that starts hostd first). hostd used to wait for the engine before it even
dialled NATS, so the pool did not know the machine existed and nothing told the member
why. Now hostd registers with what it knows without the engine (the member's donation,
labels and images: hostd.toml's), with UNREAD_FACTS for the engine's own, and reports the
engine away (NOT_RUNNING): the pool shows the machine, places nothing on it, and says what
to do. The engine is asked again with a backoff (next_wait); once it answers, hostd does
what needed it (the donation's check against the machine, the engine's facts registered,
the reconciliation, the image inventory) and the machine takes work.
"""

from potluck.contracts.engine import EngineFacts

__all__ = ["FIRST_WAIT_S", "HINT", "MAX_WAIT_S", "NOT_RUNNING", "UNREAD_FACTS", "next_wait", "worth_saying"]

#: The engine's facts registered before it was read: the registration carries facts, and these
#: say none (user namespaces "unreported", as from a hostd that did not say). Replaced by the
#: engine's own, registered again, once it answers.
UNREAD_FACTS = EngineFacts(
    version="unknown", cgroup_version="unknown", storage_driver="unknown", disk_quota_supported=False
)

#: What the pool records of the engine (HostEngineLost's detail): the member's `host status`
#: and the operator's `ops hosts list --json` read it. No address of the member's in it.
NOT_RUNNING = (
    "no Docker engine answered when hostd started: start Docker on this machine (open Docker "
    "Desktop, or `sudo systemctl start docker`); hostd checks again on its own and the machine "
    "takes work once the engine answers"
)

#: What hostd's log says to the member, beside the engine's own words.
HINT = (
    "start the Docker engine on this machine (open Docker Desktop, or `sudo systemctl start "
    "docker`), or fix docker_url in hostd's config; the machine is registered with its engine "
    "away (nothing is placed here meanwhile) and hostd checks again on its own"
)

#: The engine is asked again after FIRST_WAIT_S, then twice as long each time, up to MAX_WAIT_S:
#: a member who just opened Docker Desktop waits seconds, one away all day costs a call a while.
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 15.0

#: The log repeats the hint every this many asks (some 5 minutes at MAX_WAIT_S), not every one.
SAY_EVERY = 20


def next_wait(last: float | None) -> float:
    """How long to wait before asking the engine again, after waiting `last` (None: not yet)."""
    if last is None:
        return FIRST_WAIT_S
    return min(last * 2, MAX_WAIT_S)


def worth_saying(attempt: int) -> bool:
    """Whether the `attempt`-th ask again (from 1) that failed is logged: the first ask, at
    start, was; then every SAY_EVERY-th is, so that a member reading the log late still finds
    what to do near its end."""
    return attempt % SAY_EVERY == 0
