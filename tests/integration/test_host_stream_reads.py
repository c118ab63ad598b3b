"""A command on a host reads only the host's events after the registry's view, and still decides
on the stream's own state and version (real Postgres)."""

from potluck.contracts.host_events import HostRecovered, HostSuspected, host_stream
from potluck.events import Event, EventStore, RecordedEvent
from potluck.events.snapshots import Snapshots
from potluck.readmodels.hosts import HOST_FOLD_VERSION, HostState, HostsView
from potluck.registry import host as aggregate
from potluck.registry.projection import rebuild_view
from potluck.registry.repository import decide_on_host, host_snapshots, load_host_stream
from tests.integration.test_replay import register_host


class CountingStore(EventStore):
    """The real store, counting the records each stream read returns."""

    reads: list[int]

    async def read_stream(self, stream: str, *, after_version: int = 0) -> list[RecordedEvent]:
        records = await super().read_stream(stream, after_version=after_version)
        self.reads.append(len(records))
        return records


async def _counting(store: EventStore) -> CountingStore:
    counting = await CountingStore.open(store.dsn, max_size=2)
    assert isinstance(counting, CountingStore)
    counting.reads = []
    return counting


async def test_a_long_host_stream_is_not_read_again_for_each_command(store: EventStore) -> None:
    """A host went through 400 silences and recoveries. Before: every command on it read all
    of them. Afterwards: a command starting from the registry's view reads only what the view
    has not folded (none, then the one event another writer appended), decides on the same
    state a full read gives, and appends at the stream's version."""
    host_id = await register_host(store, "flappy", 2)
    flaps = []
    for _ in range(200):
        flaps += [
            HostSuspected(host_id=host_id, silent_for_s=1.0),
            HostRecovered(host_id=host_id, was="suspect"),
        ]
    await store.append(host_stream(host_id), flaps)
    view = HostsView()
    await rebuild_view(store, view)
    counting = await _counting(store)
    try:
        full = await load_host_stream(store, host_id)
        assert full[1] == 402
        assert await load_host_stream(counting, host_id, known=view.hosts[host_id]) == full
        assert counting.reads == [0]

        # Another writer moves the stream; the view has not folded it yet.
        await store.append(host_stream(host_id), [HostSuspected(host_id=host_id, silent_for_s=2.0)])
        counting.reads.clear()
        seen: list[HostState | None] = []

        def recover(state: HostState | None) -> list[Event]:
            seen.append(state)
            assert state is not None
            return aggregate.beat_returned(state)

        outcome = await decide_on_host(counting, host_id, recover, known=lambda: view.hosts.get(host_id))
        assert counting.reads == [1]
        assert seen[0] is not None
        assert (seen[0].liveness, seen[0].version) == ("unreachable", 403)
        assert [type(e).__name__ for e in outcome.events] == ["HostRecovered"]
        assert (await load_host_stream(store, host_id))[1] == 404
    finally:
        await counting.close()


class RacedStore(EventStore):
    """The real store, where another writer appends to the host's stream right after the first read."""

    racer: HostSuspected | None

    async def read_stream(self, stream: str, *, after_version: int = 0) -> list[RecordedEvent]:
        records = await super().read_stream(stream, after_version=after_version)
        if self.racer is not None:
            racer, self.racer = self.racer, None
            await self.append(stream, [racer])
        return records


async def test_a_stale_view_still_loses_no_concurrent_write(store: EventStore) -> None:
    """Another writer appends between a command's read and its append. The append at the version
    read fails, the command is decided again on the stream's newer state (read from the view's
    version on), and both writes are in the stream in order: optimistic concurrency holds when a
    command starts from a view."""
    host_id = await register_host(store, "raced", 2)
    view = HostsView()
    await rebuild_view(store, view)
    known = view.hosts[host_id]
    raced = await RacedStore.open(store.dsn, max_size=2)
    assert isinstance(raced, RacedStore)
    raced.racer = HostSuspected(host_id=host_id, silent_for_s=2.0)
    decided_on: list[HostState] = []

    def silence(state: HostState | None) -> list[Event]:
        assert state is not None
        decided_on.append(state)
        return aggregate.went_silent(state, 10.0, suspect_after_s=1.0, stranded_grace_s=5.0)

    try:
        outcome = await decide_on_host(raced, host_id, silence, known=lambda: view.hosts.get(host_id))
    finally:
        await raced.close()
    assert [(s.liveness, s.version) for s in decided_on] == [
        ("online", known.version),
        ("unreachable", known.version + 1),
    ]
    assert [type(e).__name__ for e in outcome.events] == ["HostLost"]
    records = await store.read_stream(host_stream(host_id))
    assert [r.type for r in records][-2:] == ["HostSuspected", "HostLost"]
    assert [r.version for r in records] == list(range(1, len(records) + 1))


async def test_a_long_host_stream_loads_from_its_snapshot_and_a_stale_or_broken_one_is_ignored(
    store: EventStore,
) -> None:
    """A host went through 1,000 silences and recoveries, and no view has folded it (an
    operator's command, a replica). Before: every load read all 2,002 events. Afterwards: the
    first load reads them and keeps a snapshot; the next command reads none, the one after
    only what was appended since, and each decides on the state a full fold from the log gives.
    A snapshot of another fold version, or one that no longer reads as a host, is ignored: the
    load reads the whole stream and gets the same state."""
    host_id = await register_host(store, "decade", 2)
    flaps: list[Event] = []
    for _ in range(1000):
        flaps += [
            HostSuspected(host_id=host_id, silent_for_s=1.0),
            HostRecovered(host_id=host_id, was="suspect"),
        ]
    await store.append(host_stream(host_id), flaps)
    stream = host_stream(host_id)

    async def folded_from_the_log() -> HostState:
        view = HostsView()
        await rebuild_view(store, view)
        return view.hosts[host_id]

    counting = await _counting(store)
    try:
        first = await load_host_stream(counting, host_id)
        assert counting.reads == [2002]
        assert first == (await folded_from_the_log(), 2002)
        assert (snapshot := await host_snapshots(store).load(stream)) is not None
        assert snapshot.version == 2002

        counting.reads.clear()
        outcome = await decide_on_host(
            counting,
            host_id,
            lambda state: (
                aggregate.went_silent(state, 1.0, suspect_after_s=0.5, stranded_grace_s=60.0)
                if state is not None
                else []
            ),
        )
        assert counting.reads == [0]
        assert [type(e).__name__ for e in outcome.events] == ["HostSuspected"]
        counting.reads.clear()
        assert await load_host_stream(counting, host_id) == (await folded_from_the_log(), 2003)
        assert counting.reads == [1]

        # The fold changed (its version bumped): the old snapshot is not read.
        counting.reads.clear()
        newer_fold = Snapshots(store, "host", HOST_FOLD_VERSION + 1, HostState)
        assert await newer_fold.load(stream) is None
        # A snapshot that no longer reads as a host: a full read, the same state.
        await store.pool.execute(
            'UPDATE snapshots SET state = \'{"not": "a host"}\'::jsonb WHERE stream = $1', stream
        )
        assert await load_host_stream(counting, host_id) == (await folded_from_the_log(), 2003)
        assert counting.reads == [2003]
    finally:
        await counting.close()
