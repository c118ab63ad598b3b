"""hostd's cap on sessions carried at once (session_slots.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.session_slots import SessionLimits, SessionSlots


def test_one_allocation_takes_its_share_and_the_others_keep_theirs() -> None:
    slots = SessionSlots(SessionLimits(total=3, per_allocation=2))
    assert slots.take("a1") is None
    assert slots.take("a1") is None
    refusal = slots.take("a1")
    assert refusal is not None
    assert "allocation a1 has 2 sessions open" in refusal
    assert slots.take("a2") is None
    full = slots.take("a3")
    assert full is not None
    assert "carries 3 sessions, its most" in full
    slots.give_back("a1")
    assert slots.take("a3") is None
    assert slots.in_use == 3


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="per_allocation <= total"):
        SessionLimits(total=2, per_allocation=3)
    with pytest.raises(ValueError, match="per_allocation <= total"):
        SessionLimits(total=1, per_allocation=0)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=100))
def test_never_more_than_the_limits(ops: list[tuple[bool, str]]) -> None:
    limits = SessionLimits(total=4, per_allocation=2)
    slots = SessionSlots(limits)
    held: dict[str, int] = {}
    for take, alloc in ops:
        if take:
            if slots.take(alloc) is None:
                held[alloc] = held.get(alloc, 0) + 1
        elif held.get(alloc):
            slots.give_back(alloc)
            held[alloc] -= 1
        assert slots.in_use == sum(held.values()) <= limits.total
        assert all(n <= limits.per_allocation for n in held.values())
