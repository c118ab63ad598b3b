"""The allocator's engine resumes from a checkpoint kept in real Postgres (migration 0004).

What must hold: an engine started over a checkpoint taken halfway through the log and
the tail after it holds exactly what an engine folding the whole log from zero holds; a
checkpoint of another fold version, of other code, unreadable or beyond the log's head is
never read (a full fold, a warning), and never stops the engine from starting.
"""

import asyncio

import pytest
from nats.aio.client import Client as NATS

from potluck.allocator.engine import AllocatorEngine
from potluck.contracts.host_events import HostRecovered, HostSuspected, host_stream
from potluck.events import EventStore, StreamAppend
from potluck.events.checkpoints import Checkpointer, Checkpoints
from potluck.events.schema import registry
from potluck.readmodels.hosts import HostsView
from potluck.registry.liveness import LivenessPolicy
from potluck.registry.projection import rebuild_view
from potluck.registry.service import RegistryService
from tests.helpers import stop, wait_until
from tests.integration.test_replay import register_host
from tests.unit.test_allocator_model import RecordingLog, cap, host, placed, spec, state_of


async def _append_pool(store: EventStore, first: int, count: int) -> None:
    """Hosts and placed allocations, appended as the recording log made them."""
    log = RecordingLog()
    for i in range(3):
        if first == 0:
            host(log, f"h{i}", cap(8, 16))
    for i in range(first, first + count):
        placed(log, f"a{i}", "ann" if i % 2 else "bob", f"h{i % 3}", spec(0.25))
    for record in log.records:
        await store.append_streams([StreamAppend(record.stream, [registry.decode_record(record)])])


async def _checkpoint(engine: AllocatorEngine) -> None:
    await Checkpointer(engine.checkpoints(), engine.checkpoint_state, lambda: engine.position).take()


async def test_an_engine_resumed_from_a_checkpoint_equals_a_fold_from_zero(
    store: EventStore,
) -> None:
    """Half the log folded and checkpointed, the rest appended after: a new engine resumes at
    the checkpoint's position, folds only the tail, and equals an engine folding from zero."""
    await _append_pool(store, 0, 10)
    half = await store.head_position()
    before = AllocatorEngine(store)
    await before.catch_up()
    await _checkpoint(before)
    await _append_pool(store, 10, 10)

    resumed = AllocatorEngine(store)
    await resumed.catch_up(resume=True)
    zero = AllocatorEngine(store)
    await zero.catch_up()

    assert resumed.resumed_from == half
    assert zero.resumed_from == 0
    assert resumed.position == zero.position == await store.head_position()
    assert state_of(resumed.model) == state_of(zero.model)
    assert len(resumed.model.allocations.allocations) == 20


async def test_a_checkpoint_of_other_code_or_unreadable_means_a_full_fold(store: EventStore) -> None:
    """Checkpoints under another fold version, under another schema hash, with garbage for a
    state, or beyond the log's head: each engine starting over them folds from zero and
    holds the whole log."""
    await _append_pool(store, 0, 6)
    head = await store.head_position()
    engine = AllocatorEngine(store)
    await engine.catch_up()
    reference = state_of(engine.model)

    # Another fold version: its rows are never looked at.
    other = Checkpoints(store, "allocator", "allocator-model", 999)
    await other.save(head, other.encode(engine.checkpoint_state()))
    # Other code: the same fold, a schema hash this code does not make.
    await store.pool.execute(
        "INSERT INTO checkpoints (reader, fold, schema, modules, position, state) "
        "SELECT reader, $1, 'not-this-code', modules, position, state FROM checkpoints WHERE fold = $2",
        engine.checkpoints().fold,
        other.fold,
    )
    started = AllocatorEngine(store)
    await started.catch_up(resume=True)
    assert started.resumed_from == 0
    assert state_of(started.model) == reference

    # This code's fold, its state unreadable.
    await _checkpoint(engine)
    await store.pool.execute(
        "UPDATE checkpoints SET state = decode('00ff00', 'hex') WHERE fold = $1", engine.checkpoints().fold
    )
    started = AllocatorEngine(store)
    await started.catch_up(resume=True)
    assert started.resumed_from == 0
    assert state_of(started.model) == reference

    # A position the log never reached (a log restored from an older backup).
    await store.pool.execute("DELETE FROM checkpoints")
    await _checkpoint(engine)
    await store.pool.execute("UPDATE checkpoints SET position = position + 1000")
    started = AllocatorEngine(store)
    await started.catch_up(resume=True)
    assert started.resumed_from == 0
    assert state_of(started.model) == reference


async def test_a_registry_resumed_from_its_checkpoint_holds_what_a_fold_from_zero_holds(
    store: EventStore, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry checkpointing after every event folds two hosts and stops; more host events
    land while it is away. The next registry resumes from the checkpoint's position and its
    view equals a view folded from zero."""
    monkeypatch.setenv("POTLUCK_CHECKPOINT_EVERY_EVENTS", "1")
    first_host = await register_host(store, "one", 2)
    await register_host(store, "two", 2)
    head = await store.head_position()
    first = RegistryService(store, nc, LivenessPolicy(60.0, 3, 1000.0))
    task = asyncio.create_task(first.run())
    try:
        deadline = asyncio.get_running_loop().time() + 20
        kept = "SELECT max(position) FROM checkpoints WHERE reader = 'registry'"
        while await store.pool.fetchval(kept) != head:
            assert asyncio.get_running_loop().time() < deadline, "the registry never checkpointed"
            await asyncio.sleep(0.05)
    finally:
        await stop(task)
    await store.append(
        host_stream(first_host),
        [
            HostSuspected(host_id=first_host, silent_for_s=9.0),
            HostRecovered(host_id=first_host, was="unreachable"),
        ],
    )

    second = RegistryService(store, nc, LivenessPolicy(60.0, 3, 1000.0))
    task = asyncio.create_task(second.run())
    try:
        final = await store.head_position()
        await wait_until(lambda: second.view.position >= final, 20, "the second registry to fold the log")
    finally:
        await stop(task)
    zero = HostsView()
    await rebuild_view(store, zero)
    assert second.resumed_from == head
    assert second.view.hosts == zero.hosts
    assert second.view.hosts[first_host].version == 4
