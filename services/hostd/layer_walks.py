"""When the disk guard has the engine count a container's layer entries again.

disk_bound.py says why the entries count: an empty file or directory is in no `SizeRw`. The
engine's list of a container's changes is the one count of them hostd has on every engine,
and no engine makes it cheap: overlay2 (Docker 20.10 and later) lists a container's changes
the naive way, walking the container's whole filesystem beside the image's, so a count costs
the member's CPU in proportion to the image's files, whatever the container wrote. Measured
here: 0.66 s of the engine's CPU for the default image (14,600 entries), 30 ms for busybox.
At the guard's regular 10 s that is 7 % of a core for each allocation of the default image,
all the time, and a larger image costs more.

So the guard measures each container's bytes every round (cheap: the engine sums its layer's
regular files alone) and has the entries counted again only once the counts of all the
containers here, at the last one's cost, take at most WALK_SHARE of the time (a machine's
share, however many allocations it runs), within WALK_MOST_S; the last count stands in
between. Nothing is stopped on a count that stands: a container it would show past its bound
is counted again first (containers.py), so a container that removed its files is never
stopped for them. A transfer hostd serves has the entries counted afresh (its budget starts
from an exact figure), and that count stands for the guard too.

Pure: containers.py measures, this keeps the counts and says when the next is due.
"""

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WALK_MOST_S", "WALK_SHARE", "LayerWalks", "next_walk_in"]

#: The most of the time the counts of a machine's containers may take together, each measured
#: by its own duration (the engine's CPU, on a quiet machine; a loaded machine makes a count
#: slower and so rarer, which is what a member's laptop wants then).
WALK_SHARE = 0.05
#: The longest a count stands, however costly the next: an image so large that its count took
#: more than WALK_SHARE of this has it counted this often all the same.
WALK_MOST_S = 60.0


def next_walk_in(cost_s: float, regular_s: float, containers: int = 1) -> float:
    """Seconds from a count's start until the guard counts again, for a count that took
    `cost_s` on a machine running `containers` that are counted: never sooner than the guard's
    regular interval, nor later than WALK_MOST_S."""
    return max(regular_s, min(WALK_MOST_S, cost_s * max(1, containers) / WALK_SHARE))


@dataclass(frozen=True)
class Walk:
    """A count of a container's layer entries, and when the guard counts again (monotonic)."""

    entries: int
    due: float


class LayerWalks:
    """The last count of each container's layer entries, by container id."""

    def __init__(self) -> None:
        self._last: dict[str, Walk] = {}

    def standing(self, container_id: str, now: float) -> int | None:
        """The container's last count while it stands; None once the guard must count again."""
        walk = self._last.get(container_id)
        return walk.entries if walk is not None and now < walk.due else None

    def counted(
        self,
        container_id: str,
        entries: int,
        *,
        started: float,
        ended: float,
        regular_s: float,
        containers: int = 1,
    ) -> None:
        """A count of `entries` ran from `started` to `ended` (monotonic), with `containers`
        counted on the machine."""
        wait = next_walk_in(ended - started, regular_s, containers)
        self._last[container_id] = Walk(entries, started + wait)

    def keep_only(self, container_ids: Iterable[str]) -> None:
        """Forget the counts of every container but these (the others are gone)."""
        kept = set(container_ids)
        for container_id in self._last.keys() - kept:
            del self._last[container_id]
