"""The fair queue of pending requests: FIFO per user, users served round robin.

Pure and deterministic: it holds requests and answers which one to place next;
it never looks at a clock (callers pass `now`) and never places anything
itself.

When capacity frees, the allocator asks `next_placeable(decide)`: users are
visited in round-robin order, starting after the user served last, and each
user's requests in the order they came. The first request that `decide` does
not answer with Wait is returned, with its decision (Placed, or Impossible
when the pool changed so that it can never fit any more). A request that must
still wait is skipped, so one user's big request does not hold back that
user's smaller ones, and never another user's. Nothing changes until the
caller `take`s the request once its placement (or refusal) is in the log; a
lost race simply leaves it queued.

`expired(now)` removes and returns the requests whose queue timeout passed.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from potluck.allocator.capacity import placement_request
from potluck.allocator.scheduler import Decision, Impossible, Placed, PlacementRequest, Wait
from potluck.readmodels.allocations import AllocationState

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pending:
    user: str
    request: PlacementRequest
    enqueued_at: datetime
    deadline: datetime
    seq: int

    @property
    def alloc_id(self) -> str:
        return self.request.alloc_id


class FairQueue:
    def __init__(self) -> None:
        self._queues: dict[str, list[Pending]] = {}
        self._ring: list[str] = []  # users with pending requests, the next to serve first
        self._index: dict[str, Pending] = {}
        self._seq = 0

    @classmethod
    def of(cls, allocations: Iterable[AllocationState]) -> "FairQueue":
        """A queue of the pending allocations of the read model, each user's in the order requested.

        The deadline of each is its queue timeout after it began waiting (its request, or its
        return from a host that could not get its image); hosts it was sent back from are
        excluded from its placement.
        """
        queue = cls()
        pending = [a for a in allocations if a.status == "pending"]
        for state in sorted(pending, key=lambda a: (a.requested_at or _EPOCH, a.alloc_id)):
            at = state.requested_at or _EPOCH
            since = state.pending_since or at
            deadline = since + timedelta(seconds=state.queue_timeout_s)
            queue.push(state.user, placement_request(state), at, deadline)
        return queue

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, alloc_id: object) -> bool:
        return alloc_id in self._index

    def __iter__(self) -> Iterator[Pending]:
        """Everything pending, users in serving order, each user's requests in order."""
        for user in self._ring:
            yield from self._queues[user]

    def in_order(self) -> list[Pending]:
        """Everything pending in the order a round would serve it if all fit: each user's first
        request in turn, then each user's second, and so on."""
        ordered: list[Pending] = []
        queues = [self._queues[user] for user in self._ring]
        depth = 0
        while queues:
            ordered.extend(q[depth] for q in queues)
            depth += 1
            queues = [q for q in queues if len(q) > depth]
        return ordered

    def get(self, alloc_id: str) -> Pending | None:
        return self._index.get(alloc_id)

    def users(self) -> list[str]:
        """Users with pending requests, in the order they will be served."""
        return list(self._ring)

    def pending_for(self, user: str) -> list[Pending]:
        return list(self._queues.get(user, ()))

    def push(
        self, user: str, request: PlacementRequest, enqueued_at: datetime, deadline: datetime
    ) -> Pending:
        """Queue a request behind the user's others; a new user joins the end of the round."""
        if request.alloc_id in self._index:
            raise ValueError(f"allocation {request.alloc_id} is already queued")
        self._seq += 1
        pending = Pending(user, request, enqueued_at, deadline, self._seq)
        queue = self._queues.get(user)
        if queue is None:
            queue = self._queues[user] = []
            self._ring.append(user)
        queue.append(pending)
        self._index[request.alloc_id] = pending
        return pending

    def next_placeable(
        self, decide: Callable[[PlacementRequest], Decision]
    ) -> tuple[Pending, Placed | Impossible] | None:
        """The request to act on next, and its decision; None when every request must wait.

        Changes nothing: call `take` once the outcome is logged.
        """
        for user in self._ring:
            for pending in self._queues[user]:
                decision = decide(pending.request)
                if not isinstance(decision, Wait):
                    return pending, decision
        return None

    def take(self, alloc_id: str) -> Pending:
        """Remove a request that was served; its user's turn passes to the next user."""
        pending = self._index[alloc_id]
        turn = self._ring.index(pending.user)
        self._remove(alloc_id)
        if pending.user in self._queues:
            self._ring = self._ring[turn + 1 :] + self._ring[: turn + 1]
        else:  # the user left the round; the one after it is now at `turn`
            self._ring = self._ring[turn:] + self._ring[:turn]
        return pending

    def remove(self, alloc_id: str) -> Pending | None:
        """Drop a request (released or refused while pending) without touching the round."""
        if alloc_id not in self._index:
            return None
        return self._remove(alloc_id)

    def expired(self, now: datetime) -> list[Pending]:
        """Remove and return the requests whose deadline is `now` or earlier, earliest first."""
        due = sorted(
            (p for p in self._index.values() if p.deadline <= now), key=lambda p: (p.deadline, p.seq)
        )
        for pending in due:
            self._remove(pending.alloc_id)
        return due

    def _remove(self, alloc_id: str) -> Pending:
        pending = self._index.pop(alloc_id)
        queue = self._queues[pending.user]
        queue.remove(pending)
        if not queue:
            del self._queues[pending.user]
            self._ring.remove(pending.user)
        return pending
