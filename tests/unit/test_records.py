"""`changed` (libs/kernel/records.py): the read models' copy of a state with a few fields
changed is the copy `dataclasses.replace` makes, and it refuses the classes where it would not be."""

import dataclasses
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.kernel.records import changed
from potluck.readmodels.allocations import AllocationState, PullFailure
from potluck.readmodels.hosts import HostState
from potluck.readmodels.jobs import JobState
from tests.fixtures.pool import spec

ALLOCATION = AllocationState(alloc_id="a-1", user="ann", spec=spec(), lifetime_s=60.0)

#: Changes an allocation's fold makes, drawn field by field.
allocation_changes = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["pending", "placed", "running", "exited", "refused"]),
        "host_id": st.none() | st.text(max_size=8),
        "exit_code": st.none() | st.integers(-1, 255),
        "oom_killed": st.booleans(),
        "reason": st.none() | st.text(max_size=8),
        "version": st.integers(0, 10**6),
        "changed_at": st.none() | st.datetimes(timezones=st.just(UTC)),
        "pull_failures": st.lists(st.builds(PullFailure, st.text(), st.text(), st.text()), max_size=2).map(
            tuple
        ),
    },
)


@given(allocation_changes)
def test_a_copy_is_the_copy_replace_makes_and_the_original_stays(changes: dict[str, Any]) -> None:
    """Tried: any set of an allocation's fields changed. Must hold: the copy equals replace()'s,
    is a new instance of the same class, and the original keeps every field it had."""
    before = dataclasses.asdict(ALLOCATION)
    copy = changed(ALLOCATION, **changes)
    assert copy == dataclasses.replace(ALLOCATION, **changes)
    assert type(copy) is AllocationState
    assert copy is not ALLOCATION
    assert dataclasses.asdict(ALLOCATION) == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.status = "lost"  # type: ignore[misc]


def test_every_read_model_state_it_copies_is_a_plain_frozen_dataclass() -> None:
    """Must hold: the states the folds copy with it are accepted (a change to one of them that
    made the copy wrong, such as a __post_init__, fails here and not in a replay)."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    host = HostState(host_id="h", name="h", nkey="")
    job = JobState(job_id="j", user="ann", spec=None, submitted_at=at)  # type: ignore[arg-type]
    assert changed(host, admin="paused").admin == "paused"
    assert changed(job, status="failed").status == "failed"
    assert changed(ALLOCATION).alloc_id == "a-1"


def test_a_field_the_class_lacks_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="AllocationState has no field colour, size"):
        changed(ALLOCATION, size=1, colour="red", status="placed")


@dataclasses.dataclass
class Mutable:
    x: int = 0


@dataclasses.dataclass(frozen=True)
class Checked:
    x: int = 0

    def __post_init__(self) -> None:
        assert self.x >= 0


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    x: int = 0


@dataclasses.dataclass(frozen=True)
class Derived:
    x: int = 0
    y: int = dataclasses.field(default=0, init=False)


@dataclasses.dataclass(frozen=True)
class Cached:
    x: int = 0

    @cached_property
    def doubled(self) -> int:
        return 2 * self.x


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (Mutable(), "not a frozen dataclass"),
        ("text", "not a frozen dataclass"),
        (Checked(), "does more in __init__"),
        (Slotted(), "does more in __init__"),
        (Derived(), "fields __init__ does not take"),
        (Cached(), "caches properties"),
    ],
)
def test_a_class_whose_dict_copy_is_not_its_copy_is_refused(record: object, why: str) -> None:
    """Tried: classes where copying the instance's dict would skip a check, miss a slot, keep a
    derived field or a stale cached value. Must hold: a TypeError that says to use replace()."""
    with pytest.raises(TypeError, match=why):
        changed(record)
