"""The fair queue of pending requests: FIFO per user, the users who hold least served first.

Pure and deterministic: built from the read model's pending allocations and what each user
holds, it answers in which order a round of the allocator tries them; it never looks at a
clock and never places anything itself.

Users are served in order of the CPUs their active allocations hold now (placed, pulling,
running), the least first; among users who hold the same, the one placed longest ago (or
never) first, then by their oldest waiting request. A round tries each user's first request in
that order, then each user's second, and so on (`in_order`), and a request that must still wait
is skipped (reactions.py), so one user's big request holds back neither that user's smaller
ones nor anyone else's.

Why by what users hold, and not by turns kept from round to round: capacity usually frees one
allocation at a time, and each round is worked out afresh from the model. Ordered by request
time alone, the user whose requests came first would take every slot that frees until their
queue ran dry, however many they already ran, and a user who came later with one request
would wait it out to its queue timeout. The order is a function of the model, as placement
is: the allocator may skip a round that has nothing new to try (reactions.py). CPUs, among the
resources, because they are what the pool's users come for; one measure keeps the order one a
user can be told (`standing`, waiting.py).
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from potluck.allocator.capacity import placement_request
from potluck.allocator.scheduler import PlacementRequest
from potluck.readmodels.allocations import AllocationState, AllocationsView

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pending:
    user: str
    request: PlacementRequest

    @property
    def alloc_id(self) -> str:
        return self.request.alloc_id


class FairQueue:
    def __init__(self) -> None:
        self._queues: dict[str, list[Pending]] = {}
        self._ring: list[str] = []  # users with pending requests, the next to serve first
        self._index: dict[str, Pending] = {}

    @classmethod
    def of(
        cls,
        allocations: Iterable[AllocationState],
        active: Iterable[AllocationState],
        last_placed: Mapping[str, int],
    ) -> "FairQueue":
        """A queue of the pending allocations of the read model, each user's in the order requested,
        users by the CPUs they hold in `active` (the model's active allocations), least first, then
        by their latest placement's log position (`last_placed`; none: first).

        Hosts a request was sent back from are excluded from its placement. Its queue timeout is
        not the queue's: decisions.timed_out reads it off the allocation at the time asked.
        """
        queue = cls()
        held: dict[str, float] = {}
        for a in active:
            held[a.user] = held.get(a.user, 0.0) + a.spec.resources.cpus
        pending = [a for a in allocations if a.status == "pending"]
        # Pushed in this order, each user joins the round at their first request pushed, and
        # a user's requests keep the order they were made in.
        in_turn = sorted(
            pending,
            key=lambda a: (
                round(held.get(a.user, 0.0), 6),
                last_placed.get(a.user, 0),
                a.requested_at or _EPOCH,
                a.alloc_id,
            ),
        )
        for state in in_turn:
            queue.push(state.user, placement_request(state))
        return queue

    @classmethod
    def of_view(cls, view: AllocationsView) -> "FairQueue":
        """The queue a round of the allocator tries, and the one its answers show places in."""
        return cls.of(view.pending(), view.active(), view.last_placed)

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

    def push(self, user: str, request: PlacementRequest) -> Pending:
        """Queue a request behind the user's others; a new user joins the end of the round."""
        if request.alloc_id in self._index:
            raise ValueError(f"allocation {request.alloc_id} is already queued")
        pending = Pending(user, request)
        queue = self._queues.get(user)
        if queue is None:
            queue = self._queues[user] = []
            self._ring.append(user)
        queue.append(pending)
        self._index[request.alloc_id] = pending
        return pending
