"""Which events may let a waiting request fit (services/allocator/reactions.py, `makes_room`): the
allocator tries its whole pending queue again on those only, and otherwise only the requests that
began waiting since."""

from datetime import UTC, datetime

import pytest

from potluck.allocator.reactions import makes_room
from potluck.contracts.allocation_events import (
    AllocationExtended,
    CapacityFreed,
    CapacityReserved,
    CapacityRetained,
    QuotaCharged,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import HostLost, HostResumed
from potluck.contracts.host_images import HostImagesReported
from potluck.events import Event

ONE = Capacity(cpus=1, memory_bytes=1 << 30, disk_bytes=1 << 30)


@pytest.mark.parametrize(
    ("event", "category"),
    [
        (CapacityFreed(host_id="h", alloc_id="a", amount=ONE), "capacity"),
        (CapacityRetained(host_id="h", alloc_id="a", disk_bytes=1), "capacity"),
        (HostResumed(host_id="h", by="operator"), "host"),
        # A lost host takes room away, but it also makes impossible what only it could hold.
        (HostLost(host_id="h", silent_for_s=60), "host"),
        (HostImagesReported(host_id="h", images=["potluck-test:1"]), "images"),
    ],
)
def test_room_given_back_and_any_change_of_hosts_or_their_images_may_let_a_request_fit(
    event: Event, category: str
) -> None:
    assert makes_room(event, category)


@pytest.mark.parametrize(
    ("event", "category"),
    [
        (CapacityReserved(host_id="h", alloc_id="a", amount=ONE), "capacity"),
        (AllocationExtended(alloc_id="a", expires_at=datetime(2026, 1, 1, tzinfo=UTC)), "alloc"),
        (QuotaCharged(user="u", alloc_id="a"), "quota"),
    ],
)
def test_a_reservation_or_a_change_of_allocations_or_quotas_lets_nothing_fit(
    event: Event, category: str
) -> None:
    assert not makes_room(event, category)
