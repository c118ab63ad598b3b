"""The gateway reading the log to its head for a login its view cannot admit yet (view_refresh.py),
on a real Postgres: a view that has not followed the log is brought up to it, every login gets
a read begun after it arrived, and a database that is away leaves the view as it was."""

import asyncio
from datetime import UTC, datetime, timedelta

from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationSpec,
    alloc_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.events import EventStore, Fold
from potluck.localstack import PostgresServer
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.view_refresh import ViewRefresh


async def _place(store: EventStore, alloc_id: str) -> int:
    """Log allocation `alloc_id` as placed; the position of its last event."""
    spec = AllocationSpec(
        resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=512 << 20),
        image="potluck/default",
        command=["sleep", "3600"],
        ssh_keys=[],
    )
    recorded = await store.append(
        alloc_stream(alloc_id),
        [
            AllocationRequested(alloc_id=alloc_id, user="ann", spec=spec, lifetime_s=3600),
            AllocationPlaced(
                alloc_id=alloc_id,
                host_id="h1",
                user="ann",
                spec=spec,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            ),
        ],
        expected_version=0,
    )
    return recorded[-1].position


async def test_a_view_that_has_not_followed_the_log_is_read_to_its_head(store: EventStore) -> None:
    """What is tried: an allocation is logged while nothing follows the log (as when the
    gateway's notification is lost). What must hold: one refresh folds it into the view."""
    view = GatewayView()
    fold = Fold(view, reader="test")
    await fold.catch_up(store)
    position = await _place(store, "vr-one")
    assert view.allocation("vr-one") is None

    assert await ViewRefresh(fold, store).refresh()

    assert view.allocation("vr-one") is not None
    assert fold.position >= position


async def test_every_login_among_many_at_once_sees_what_was_logged_before_it(store: EventStore) -> None:
    """What is tried: 40 logins at once, each right after its own allocation is logged, so that
    most arrive while another's read is under way. Reads are shared; a read begun before a login
    arrived may have missed its allocation and must not count for it.
    What must hold: each login's refresh says it read the log, and its allocation is in the view."""
    view = GatewayView()
    fold = Fold(view, reader="test")
    await fold.catch_up(store)
    refresh = ViewRefresh(fold, store, timeout_s=30)
    missing: list[str] = []

    async def login(i: int) -> None:
        await asyncio.sleep(0.002 * (i % 7))
        await _place(store, f"vr-many-{i}")
        assert await refresh.refresh()
        if view.allocation(f"vr-many-{i}") is None:
            missing.append(f"vr-many-{i}")

    await asyncio.gather(*(login(i) for i in range(40)))

    assert missing == []


async def test_a_database_that_is_away_leaves_the_view_as_it_was(own_postgres: PostgresServer) -> None:
    """What is tried: the database stops after an allocation is folded, and a login asks for a
    refresh. What must hold: the refresh says it could not read, within its timeout and without
    raising; the view keeps what it had."""
    store = await EventStore.open(own_postgres.url)
    try:
        view = GatewayView()
        fold = Fold(view, reader="test")
        await _place(store, "vr-kept")
        await fold.catch_up(store)
        position = fold.position
        await asyncio.to_thread(own_postgres.stop)

        async with asyncio.timeout(30):  # a hang fails here rather than holding the login
            read = await ViewRefresh(fold, store, timeout_s=2).refresh()

        assert read is False
        assert fold.position == position
        assert view.allocation("vr-kept") is not None
    finally:
        await store.close()
