"""The states `potluck alloc ls --state` accepts are the allocator's, written out in the CLI."""

from typing import get_args

from potluck.readmodels.allocations import AllocationStatus
from potluck.user.cli import ALLOCATION_STATES


def test_the_cli_offers_every_allocation_state_and_no_other() -> None:
    """Tried: the CLI's list against readmodels' AllocationStatus. Must hold: the same states in
    the same order, so a state the allocator adds is not refused as a typo (exit 2)."""
    assert get_args(AllocationStatus) == ALLOCATION_STATES
