"""The registry's view of the hosts as fed by a Fold: what it folds, what it skips, how far it got.

Records are built as the store hands them out, so the Fold decodes them
exactly as in the running registry; one of them is a newer writer's event
type that this version cannot decode.
"""

import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDrainStarted,
    HostEnrolled,
    HostPaused,
    HostResumed,
)
from potluck.events import Event, Fold, RecordedEvent
from potluck.projections import ReadModels
from potluck.readmodels.hosts import HostsView
from potluck.registry.projection import HOST_CATEGORIES, HostsProjection, hosts_fold
from tests.helpers import host_registered

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


def recorded(position: int, stream: str, version: int, event: Event) -> RecordedEvent:
    return raw(position, stream, version, type(event).type_name, event.model_dump_json())


def raw(position: int, stream: str, version: int, type_name: str, data: str) -> RecordedEvent:
    return RecordedEvent(position, uuid4(), stream, version, type_name, 1, data, {}, T0)


def the_log() -> list[RecordedEvent]:
    return [
        recorded(1, "host-h-1", 1, HostEnrolled(host_id="h-1", name="laptop", nkey="UKEY")),
        recorded(
            2,
            "host-h-1",
            2,
            host_registered(
                host_id="h-1",
                donated=Capacity(cpus=2, memory_bytes=1 << 30, disk_bytes=1 << 30),
                engine=ENGINE,
                hostd_version="1.0",
            ),
        ),
        raw(3, "host-h-1", 3, "HostTeleported", json.dumps({"host_id": "h-1", "to": "mars"})),
        raw(4, "alloc-a-1", 1, "AllocationSomethingNew", "{}"),  # not the registry's: not even decoded
        recorded(6, "host-h-1", 4, HostPaused(host_id="h-1", by="member")),
        raw(7, "user-alice", 1, "UserAdded", "{}"),
    ]


def test_the_projection_reads_host_streams_only() -> None:
    assert HostsProjection(HostsView()).categories == HOST_CATEGORIES == frozenset({"host"})


def test_an_unreadable_host_event_is_skipped_counted_and_folding_goes_on() -> None:
    view = HostsView()
    fold = hosts_fold(view)
    fold.apply_all(the_log())
    state = view.hosts["h-1"]
    assert (state.registered, state.admin, state.version) == (True, "paused", 4)
    assert fold.skipped.count == 1
    [skipped] = fold.skipped.recent
    assert (skipped.position, skipped.stream, skipped.type) == (3, "host-h-1", "HostTeleported")
    assert "HostTeleported" in skipped.error
    assert fold.skipped.as_dict()["count"] == 1
    assert fold.position == 7


def test_the_view_reaches_the_folds_position_other_categories_included() -> None:
    view = HostsView()
    projection = HostsProjection(view)
    fold = Fold(projection, reader="test")
    fold.apply_all(the_log())
    assert view.position == 6  # the last host event it folded
    projection.caught_up(fold)
    assert view.position == 7
    fold.apply_all(the_log())  # folded already: nothing changes, nothing counted twice
    assert (view.position, fold.skipped.count) == (7, 1)


def test_a_fold_resumes_where_its_view_stopped() -> None:
    view = HostsView()
    first = hosts_fold(view)
    first.apply_all(the_log()[:2])
    HostsProjection(view).caught_up(first)
    again = hosts_fold(view)
    assert again.position == 2
    again.apply_all(the_log())
    assert view.hosts["h-1"].admin == "paused"
    assert again.skipped.count == 1


def test_a_drains_grace_counts_from_its_start_for_a_hostd_that_registers_later() -> None:
    """What a registering hostd is told of a drain under way: the grace left, never more than
    the member gave nor less than nothing; nothing once the host is resumed."""
    started = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    view = HostsView()
    view.apply(HostEnrolled(host_id="h-1", name="a", nkey="U" + "A" * 55), position=1, version=1, at=started)
    view.apply(HostDrainStarted(host_id="h-1", by="member", grace_s=60), position=2, version=2, at=started)
    host = view.hosts["h-1"]
    assert host.drain_left_s(started) == 60
    assert host.drain_left_s(started + timedelta(seconds=45)) == 15
    assert host.drain_left_s(started + timedelta(hours=1)) == 0
    assert host.drain_left_s(started - timedelta(seconds=5)) == 60  # a clock behind the log's
    view.apply(HostResumed(host_id="h-1", by="member"), position=3, version=3, at=started)
    assert view.hosts["h-1"].drain_left_s(started) is None


def test_a_hosts_last_event_unreadable_still_counts_in_its_version_as_the_replay_has_it() -> None:
    """Tried: a host stream whose last event cannot be read (a newer writer's type), folded by the
    registry's projection and by `potluck ops replay`'s models.
    Must hold: both hold the host at that event's version (before, the registry kept the version
    before it, and `replay --check` reported a difference on a healthy pool)."""
    log = the_log()[:3]
    view = HostsView()
    hosts_fold(view).apply_all(log)
    replayed = ReadModels()
    replayed.fold.apply_all(log)
    assert view.hosts["h-1"].version == 3
    assert replayed.hosts.hosts["h-1"].version == 3
    assert view.hosts["h-1"] == replayed.hosts.hosts["h-1"]
