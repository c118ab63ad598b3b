"""The fair queue of pending requests: FIFO per user, the users who hold least served first.

Pure and deterministic: from the read model's pending allocations and what each user holds, it
answers in which order a round of the allocator tries them, and where each stands in the queue
its user is shown; it never looks at a clock and never places anything itself. It orders the
allocations themselves: each answer about a pending allocation shows its place, worked out
again whenever the log moves, so the order costs a sort of what waits and nothing per entry.

Users are served in order of the CPUs their active allocations hold now (placed, pulling,
running), the least first; among users who hold the same, the one placed longest ago (or
never) first, then by their oldest waiting request. A round tries each user's first request in
that order, then each user's second, and so on (`fair_order`), and a request that must still wait
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

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from potluck.readmodels.allocations import AllocationState, AllocationsView

__all__ = ["fair_order", "fair_order_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fair_order(
    allocations: Iterable[AllocationState],
    active: Iterable[AllocationState],
    last_placed: Mapping[str, int],
) -> list[AllocationState]:
    """The pending ones of `allocations` in the order a round serves them if all fit: each user's
    first request in turn, then each user's second, and so on; users by the CPUs they hold in
    `active` (the model's active allocations), least first, then by their latest placement's
    log position (`last_placed`; none: first), then by their oldest request; each user's
    requests in the order they were made."""
    held: dict[str, float] = {}
    for a in active:
        held[a.user] = held.get(a.user, 0.0) + a.spec.resources.cpus
    by_user: dict[str, list[AllocationState]] = {}
    for a in allocations:
        if a.status == "pending":
            by_user.setdefault(a.user, []).append(a)
    for requests in by_user.values():
        requests.sort(key=_made)
    queues = sorted(
        by_user.values(),
        key=lambda q: (round(held.get(q[0].user, 0.0), 6), last_placed.get(q[0].user, 0), _made(q[0])),
    )
    ordered: list[AllocationState] = []
    depth = 0
    while len(queues) > 1:
        ordered.extend(q[depth] for q in queues)
        depth += 1
        queues = [q for q in queues if len(q) > depth]
    if queues:  # one user's left: the rest of theirs in order
        ordered.extend(queues[0][depth:])
    return ordered


def _made(state: AllocationState) -> tuple[datetime, str, int, str]:
    """The order a user's requests were made in: a job's tasks requested together (one append,
    one time) by their index, for their ids are random and users watch task 0 start first."""
    return (state.requested_at or _EPOCH, state.job_id or "", state.task_index or 0, state.alloc_id)


def fair_order_of(view: AllocationsView) -> list[AllocationState]:
    """The order a round of the allocator tries the model's pending allocations in, and the one
    its answers show places in."""
    return fair_order(view.pending(), view.active(), view.last_placed)
