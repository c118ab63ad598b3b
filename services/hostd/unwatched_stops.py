"""A container that ended while no hostd watched its engine: was it stopped on its host?

While hostd follows its engine's events it sees a stop as it is made (a `kill` event before
the `die`, containers.py), whoever made it. A stop made while nobody followed leaves only the
container's end: a machine rebooted with hostd stopped first (the engine stops every container
as it shuts down), or the member's `docker stop` while hostd was down. Its user would read
"exited 143" as their command's failure, and a batch job would fail the task for good, for
what was the member taking their machine back.

A stop ends a container as a signal does: its init, killed by SIGTERM or SIGKILL, exits with
128 plus the signal. A command that exits so by itself while hostd is down is read as stopped
too; that costs its job a re-queue (without using a retry, within the job's host losses), where
the opposite reading would fail a member's reboot's every task. The OOM killer's SIGKILL is
told apart by the engine.

Pure: a container's state and the time this hostd began following the engine in, a verdict out.
"""

from datetime import datetime

from potluck.hostd.docker_driver import STOP_SIGNALS, ManagedContainer

__all__ = ["SIGNALLED_EXITS", "stopped_unwatched"]

#: How a container whose init died of a stop's signal (SIGTERM, then SIGKILL) exits: the same
#: signals a live `kill` event is read by, so both readings of a stop agree.
SIGNALLED_EXITS = frozenset(128 + number for number in STOP_SIGNALS)


def stopped_unwatched(container: ManagedContainer, watched_since: datetime | None) -> bool:
    """Whether `container` ended as a stop ends one, at a time no hostd followed its engine's
    events: before `watched_since`, when the event stream this hostd follows opened (None: none
    is open). An end with no recorded time is not judged."""
    if container.running or container.oom_killed or container.exit_code not in SIGNALLED_EXITS:
        return False
    if container.finished_at is None:
        return False
    return watched_since is None or container.finished_at < watched_since
