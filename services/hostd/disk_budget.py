"""What an allocation's container may still write through the transfers hostd serves, shared
by all of them at once.

hostd's own SFTP server (helper_sftp.py) and `potluck cp`'s uploads (container_upload.py)
write into a container on the user's behalf; `scp -O`'s sink (scp_sink.py) and the image's
own sftp-server (sftp_filter.py) write what hostd passes on to them. Each takes what it
writes from the allocation's `DiskBudget` before the bytes reach the container, and is
refused ("no space", "needs N bytes, M are left") when it is not there: the transfer fails
cleanly, and hostd's disk guard, which stops a container past its bound, never has to stop
the allocation for a transfer. The budget
is measured when the first transfer of the allocation joins it (its bound, less what the
container's writable layer holds, less DISK_SLACK for what the bytes cost beyond themselves:
blocks, directories, metadata), counted down by every transfer that holds it, and forgotten
when the last leaves (the next is measured afresh, counting whatever the container wrote
meanwhile). Two transfers at once thus share what is left, rather than each being allowed all
of it.

What a transfer takes is what its bytes may add at most, which can be more than they add: an
upload over a file the container's layer already holds (the same file sent again) adds
nothing where the budget took its whole size again, so a user re-sending a 40 MB file into a
64 MB bound was refused. A transfer about to be refused that holds the budget alone, with
nothing of its own still on its way to the container, has it measured again first
(`remeasure`): the measure says what the layer holds now, and only what does not fit that is
refused. Only then: with another transfer holding the budget, bytes it has passed on but the
container has not written yet would be in neither the measure nor the budget.

The guard itself is unchanged: it still holds the container to its bound, whatever writes.
"""

import asyncio
import time
import weakref

import structlog

from potluck.hostd.exec_bridge import ExecBridge

__all__ = [
    "BOUND_WAIT_S",
    "DISK_SLACK",
    "BoundUnknown",
    "DiskBudget",
    "bound_known",
    "files_bound",
    "join",
    "leave",
    "remeasure",
]

log = structlog.get_logger(__name__)


def files_bound(bound: int | None) -> str:
    """What the files of an allocation whose bound is `bound` may take, as its user reads it:
    not its disk (what it asked for, what `potluck cp` checks first), whose output log's part
    is held back, so the two figures a user meets differ and each says which it is."""
    return f"the {bound} bytes its files may take (its disk less its output log's part)"


#: What the budget keeps back from what the measure says is left.
DISK_SLACK = 1 << 20
#: How long a transfer waits for hostd to know the allocation's disk bound: a hostd that just
#: started learns it from the allocator's snapshot.
BOUND_WAIT_S = 10.0


class BoundUnknown(Exception):
    """hostd holds no spec of the allocation yet (it started a moment ago): it does not know the
    bound, so nothing may be written; never "no space": the disk is not full."""


class DiskBudget:
    """What the allocation's container may still write through hostd's transfers (None: no
    bound is known, the engine did not say the layer's size), and how many transfers hold it."""

    def __init__(self, left: int | None) -> None:
        self.left = left
        self.sessions = 0
        #: What was claimed since the budget was measured: a measure again can only find room
        #: that claims since took too much of.
        self.claimed = 0

    def claim(self, growth: int) -> bool:
        """Count `growth` as written if it fits what is left (checked and counted with no await
        between: another transfer may be claiming meanwhile); False, nothing counted, if not."""
        if self.left is None:
            return True
        if growth > self.left:
            return False
        self.left -= growth
        self.claimed += growth
        return True

    @property
    def shown_left(self) -> int:
        """What is left, for a refusal's message (never negative: the slack may pass it)."""
        return max(0, self.left or 0)

    def give_back(self, growth: int) -> None:
        """`growth` taken earlier was not written after all (the write failed, the copy was
        removed)."""
        if self.left is not None:
            self.left += growth
        self.claimed = max(0, self.claimed - growth)


class _Budgets:
    """One hostd's (one bridge's) budgets, by allocation; `lock` makes a budget's measure and
    its sharing one step (two transfers starting at once share one measure)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.by_alloc: dict[str, DiskBudget] = {}


_budgets: "weakref.WeakKeyDictionary[ExecBridge, _Budgets]" = weakref.WeakKeyDictionary()


async def bound_known(bridge: ExecBridge, alloc_id: str) -> None:
    """Return once hostd knows the allocation's disk bound; BoundUnknown when it holds no spec
    of the allocation after BOUND_WAIT_S. A transfer that makes or empties a file before it
    joins (hostd's own SFTP server's open) waits for this first: refused after the file was
    made, it left an empty file behind."""
    deadline = time.monotonic() + BOUND_WAIT_S
    while bridge.disk_bound_of(alloc_id) is None:
        if time.monotonic() >= deadline:
            log.warning("disk_budget.bound_unknown", alloc_id=alloc_id, waited_s=BOUND_WAIT_S)
            raise BoundUnknown(
                "hostd on the allocation's machine does not know its disk bound yet (it has not "
                "heard from the pool since it started): nothing can be written into it by a "
                "transfer until it does; try again in a minute (reading works)"
            )
        await asyncio.sleep(0.25)


async def join(bridge: ExecBridge, alloc_id: str) -> DiskBudget:
    """The allocation's shared budget, measured if no transfer holds one; the caller `leave`s
    it when done. BoundUnknown when hostd holds no spec of the allocation after BOUND_WAIT_S."""
    await bound_known(bridge, alloc_id)
    shared = _budgets.setdefault(bridge, _Budgets())
    async with shared.lock:
        budget = shared.by_alloc.get(alloc_id)
        if budget is None:
            started = time.monotonic()
            left = await bridge.disk_left(alloc_id)
            budget = shared.by_alloc[alloc_id] = DiskBudget(None if left is None else left - DISK_SLACK)
            # The transfer waits for this measure (the engine walks the container's layer).
            seconds = round(time.monotonic() - started, 3)
            log.info("disk_budget.measured", alloc_id=alloc_id, left=budget.left, seconds=seconds)
        budget.sessions += 1
        return budget


async def remeasure(bridge: ExecBridge, alloc_id: str, budget: DiskBudget) -> None:
    """Measure `budget` again, if its caller is the one transfer holding it (module docstring);
    the caller has nothing of its own still on its way to the container. Whatever comes of it,
    nothing claimed before is left to be found again (`claimed` is 0 after): a refusal after it
    is final. ExecError or OSError when the engine fails to measure."""
    shared = _budgets.get(bridge)
    if shared is None:
        return
    async with shared.lock:
        if budget.sessions != 1 or shared.by_alloc.get(alloc_id) is not budget or budget.claimed <= 0:
            return
        budget.claimed = 0
        before = budget.left
        left = await bridge.disk_left(alloc_id)
        if left is not None:
            budget.left = left - DISK_SLACK
        log.info("disk_budget.remeasured", alloc_id=alloc_id, left_before=before, left=budget.left)


def leave(bridge: ExecBridge, alloc_id: str, budget: DiskBudget) -> None:
    """A transfer that joined `budget` is done with it."""
    budget.sessions -= 1
    shared = _budgets.get(bridge)
    if budget.sessions <= 0 and shared is not None and shared.by_alloc.get(alloc_id) is budget:
        del shared.by_alloc[alloc_id]
