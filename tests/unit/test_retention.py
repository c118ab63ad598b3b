"""The retention window (libs/readmodels/retention.py): what ended leaves the allocator's model.

What must hold: an allocation ended, with no container kept, leaves the model once it has been
ended longer than the window on the log's clock (the times of the events folded, never this
machine's), and not before; one kept, pending or active never leaves; a job's attempts leave
with their job, once it has ended and none of them runs or keeps a container; what leaves takes
every index along (lists, counts, tallies), and quotas, capacity and placement do not move. The
fold stays a pure function of the events: the same log gives the same model whatever the
batching, a redelivery or the checkpoint it resumed from, and `potluck ops replay` folds it too.
"""

import itertools
import pickle
from datetime import datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.model import AllocatorModel
from potluck.cli_options import RETENTION_DEFAULT
from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    AllocationExited,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    CapacityFreed,
    Quota,
    UserAdded,
    alloc_stream,
    capacity_stream,
    user_stream,
)
from potluck.contracts.host_events import HostEnrolled, host_stream
from potluck.contracts.job_events import JobCompleted, JobSubmitted, JobTaskRequested, job_stream
from potluck.events import Event, Fold, RecordedEvent
from potluck.events.checkpoints import Checkpoint, _unpickled
from potluck.kernel.durations import parse_duration
from potluck.projections import ReadModels
from potluck.readmodels.owner_index import OwnerIndex
from potluck.readmodels.retention import DEFAULT_RETENTION_S, Retirement
from potluck.sshgateway.projection import GatewayView
from tests.unit.test_allocator_model import (
    T0,
    RecordingLog,
    cap,
    host,
    placed,
    recorded,
    spec,
    state_of,
    steps,
)
from tests.unit.test_job_decisions import job_spec

HOUR = timedelta(hours=1)


class ClockedLog(RecordingLog):
    """The in-memory log, each event recorded at `now` (which the test moves)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0

    def raw(self, stream: str, type_name: str, data: str, schema_version: int = 1) -> RecordedEvent:
        version = self.versions[stream] = self.version(stream) + 1
        record = RecordedEvent(
            len(self.records) + 1, uuid4(), stream, version, type_name, schema_version, data, {}, self.now
        )
        self.records.append(record)
        return record


def model_of(records: list[RecordedEvent], retention_s: float) -> AllocatorModel:
    model = AllocatorModel(retirement=Retirement(retention_s=retention_s))
    Fold(model, reader="test").apply_all(records)
    return model


def released(log: ClockedLog, alloc_id: str, user: str = "alice") -> None:
    placed(log, alloc_id, user, "h1", spec(1))
    log.add(alloc_stream(alloc_id), AllocationReleased(alloc_id=alloc_id, host_id="h1", by=f"user:{user}"))
    log.add(capacity_stream("h1"), CapacityFreed(host_id="h1", alloc_id=alloc_id, amount=cap(1)))


def pool() -> ClockedLog:
    log = ClockedLog()
    host(log, "h1", cap(8, 16))
    log.add(user_stream("alice"), UserAdded(user="alice", token_sha256="ab" * 32, quota=Quota(cpus=2)))
    return log


def tick(log: ClockedLog, by: timedelta) -> None:
    """The log's clock moves only with an event: one of a user added, after `by`."""
    log.now += by
    log.add(
        user_stream(f"u-{len(log.records)}"), UserAdded(user=f"u-{len(log.records)}", token_sha256="cd" * 32)
    )


def test_a_released_allocation_leaves_once_ended_longer_than_the_window_on_the_logs_clock() -> None:
    """Tried: a1 released at T0, a2 running; the log's clock moved to just under the window, then
    past it. Must hold: a1 is held (listed, counted) until the window has passed, then gone from
    the allocations, the user's list and the counts; a2, active, stays; what the user holds and
    the host's reservations are the same before and after."""
    log = pool()
    released(log, "a1")
    placed(log, "a2", "alice", "h1", spec(1))
    log.add(alloc_stream("a2"), AllocationRunning(alloc_id="a2", host_id="h1", container_id="c2"))
    tick(log, HOUR - timedelta(seconds=1))
    before = model_of(log.records, 3600)
    assert set(before.allocations.allocations) == {"a1", "a2"}

    tick(log, timedelta(seconds=1))
    after = model_of(log.records, 3600)

    assert set(after.allocations.allocations) == {"a2"}
    assert [a.alloc_id for a in after.allocations_of("alice")] == ["a2"]
    assert after.allocations.by_status == {"running": 1}
    assert after.held_by("alice") == before.held_by("alice") == {"a2": cap(1)}
    assert after.ledger.reserved("h1") == before.ledger.reserved("h1") == cap(1)
    assert after.retirement.allocations_retired == 1


def test_an_ended_allocation_made_live_again_by_a_row_put_in_by_hand_is_not_dropped() -> None:
    """Tried: a1 released at T0, then a row the allocator never writes (an AllocationRequested
    for a1 again, inserted into the log by hand) within the window, then the log's clock past
    the window; folded by the allocator's model and by the gateway's view. Before: the fold
    stopped on an assertion ("allocation a1 is pending: never dropped"): a poison row that
    would stop the allocator at every start. Must hold: both fold on, a1 stays (pending, as
    the log now says), nothing is counted as retired."""
    log = pool()
    released(log, "a1")
    log.add(alloc_stream("a1"), AllocationRequested(alloc_id="a1", user="alice", spec=spec(1), lifetime_s=60))
    tick(log, 2 * HOUR)

    model = model_of(log.records, 3600)
    assert model.allocations.allocations["a1"].status == "pending"
    assert model.retirement.allocations_retired == 0

    view = GatewayView(retirement=Retirement(retention_s=3600))
    fold = Fold(view, reader="test")
    fold.apply_all(log.records)
    assert view.allocations.allocations["a1"].status == "pending"


def test_the_logs_clock_never_goes_back() -> None:
    """Tried: an event recorded two hours after a1 ended, then one recorded earlier than that (a
    transaction that began before another but committed after it). Must hold: the clock stays at
    the latest time, so a1, gone at the first, is not back and nothing else moves."""
    log = pool()
    released(log, "a1")
    tick(log, 2 * HOUR)
    late = log.now
    log.now = T0 + timedelta(minutes=1)
    log.add(user_stream("carol"), UserAdded(user="carol", token_sha256="ef" * 32))

    model = model_of(log.records, 3600)

    assert model.retirement.clock == late
    assert "a1" not in model.allocations.allocations


def test_a_kept_container_holds_its_allocation_until_it_is_removed_and_the_window_passes() -> None:
    """Tried: a1 exits keeping its container for two hours; the log's clock passes the window;
    then the container is removed, and the clock passes the window again. Must hold: a1 stays
    while kept (a host's snapshot names it), and leaves at the next look, a window after the
    one that found it kept."""
    log = pool()
    placed(log, "a1", "alice", "h1", spec(1))
    log.add(alloc_stream("a1"), AllocationRunning(alloc_id="a1", host_id="h1", container_id="c1"))
    log.add(
        alloc_stream("a1"),
        AllocationExited(alloc_id="a1", host_id="h1", exit_code=0, kept_until=T0 + 2 * HOUR),
    )
    tick(log, HOUR + timedelta(minutes=30))
    assert model_of(log.records, 3600).allocations.kept_on("h1")[0].alloc_id == "a1"
    log.add(alloc_stream("a1"), AllocationDiscarded(alloc_id="a1", host_id="h1", reason="kept long enough"))
    tick(log, HOUR - timedelta(minutes=1))
    assert "a1" in model_of(log.records, 3600).allocations.allocations  # looked at again later
    tick(log, timedelta(minutes=1))
    model = model_of(log.records, 3600)
    assert "a1" not in model.allocations.allocations
    assert model.allocations.kept_on("h1") == []


def test_a_jobs_attempts_leave_with_their_job_once_it_has_ended() -> None:
    """Tried: a job whose first attempt failed at T0, its second still running past the window;
    then the job completes and the window passes. Must hold: the failed attempt stays while its
    job runs (the job's standing reads it); one window after the job ended, the job, both
    attempts, the job's tally and its attempts' index are all gone."""
    log = pool()
    spec_ = job_spec(1)
    log.add(job_stream("j1"), JobSubmitted(job_id="j1", user="alice", spec=spec_))
    for attempt, alloc_id in ((1, "t1"), (2, "t2")):
        log.add(
            job_stream("j1"), JobTaskRequested(job_id="j1", task_index=0, attempt=attempt, alloc_id=alloc_id)
        )
        log.add(
            alloc_stream(alloc_id),
            AllocationRequested(
                alloc_id=alloc_id, user="alice", spec=spec_.task, lifetime_s=600, job_id="j1", task_index=0
            ),
        )
        if attempt == 1:
            log.add(alloc_stream("t1"), AllocationReleased(alloc_id="t1", by="allocator", reason="failed"))
    tick(log, 2 * HOUR)
    running = model_of(log.records, 3600)
    assert {"t1", "t2"} <= set(running.allocations.allocations)
    assert "j1" in running.jobs.jobs

    log.add(alloc_stream("t2"), AllocationReleased(alloc_id="t2", by="allocator"))
    log.add(job_stream("j1"), JobCompleted(job_id="j1", succeeded=0, failed=1))
    tick(log, 2 * HOUR)
    model = model_of(log.records, 3600)

    assert "j1" not in model.jobs.jobs
    assert not {"t1", "t2"} & set(model.allocations.allocations)
    assert "j1" not in model.job_tallies.tallies
    assert not {"t1", "t2"} & set(model.jobs.task_of)
    assert list(model.jobs.by_user.ids("alice")) == []
    assert model.retirement.jobs_retired == 1


def test_the_window_must_be_more_than_nothing_and_the_clis_default_is_the_models() -> None:
    """Tried: a window of 0 seconds; the --retention default. Must hold: 0 is refused with a
    message naming the window; the CLI's default text is the model's default."""
    with pytest.raises(ValueError, match="retention window"):
        Retirement(retention_s=0)
    assert parse_duration(RETENTION_DEFAULT) == DEFAULT_RETENTION_S


def test_a_row_removed_from_the_owner_index_is_no_longer_listed_or_owned() -> None:
    """Tried: three rows of one owner, the middle one removed, then the last. Must hold: lists
    and pages skip them, `owns` says no, and an owner with no rows left has no entry."""
    index = OwnerIndex.of([("alice", T0, "a1"), ("alice", T0 + HOUR, "a2"), ("alice", T0 + 2 * HOUR, "a3")])
    index.remove("a2")
    index.remove("nothing")  # never listed: nothing happens
    assert list(index.ids("alice")) == ["a1", "a3"]
    assert not index.owns("alice", "a2")
    assert index.page("alice", "a1", 10) == (["a3"], None)
    # A cursor of a row removed since goes on from the row's place, as it would have.
    assert index.page("alice", None, 10, after_key=(T0 + HOUR, "a2")) == (["a3"], None)
    index.remove("a1")
    index.remove("a3")
    assert index.rows == {}
    assert index.placed == {}


# --- determinism ------------------------------------------------------------------------------

#: Histories of `steps` are recorded one second apart: windows this short drop rows in them.
WINDOWS = st.sampled_from([1.0, 2.0, 5.0, 15.0])


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(steps(), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    checkpoint_at=st.integers(0, 40),
    window=WINDOWS,
)
def test_the_same_events_give_the_same_model_whatever_the_batching_or_checkpoint(
    history: list[tuple[str, Event | None]], cuts: list[int], checkpoint_at: int, window: float
) -> None:
    """Tried: any log of hosts, capacity, allocations, users, quotas and unreadable events,
    folded with a short window at once; in batches each handed over again; resumed from a
    checkpoint (through pickle) taken after any event; and by the operator's replay. Must hold:
    all four hold the same model, indexes included; and every allocation a fold that drops
    nothing holds as pending, active or kept, this one holds identically."""
    log = recorded(history)
    at_once = model_of(log.records, window)

    in_batches = AllocatorModel(retirement=Retirement(retention_s=window))
    again = Fold(in_batches, reader="test")
    for start, end in itertools.pairwise([0, *sorted(cuts), len(log.records)]):
        again.apply_all(log.records[start:end])
        again.apply_all(log.records[:end])

    first = AllocatorEngine(None, retention_s=window)  # type: ignore[arg-type]
    first.fold.apply_all(log.records[: min(checkpoint_at, len(log.records))])
    resumed = AllocatorEngine(None, retention_s=window)  # type: ignore[arg-type]
    resumed.resume(Checkpoint(first.position, _unpickled(pickle.dumps(first.checkpoint_state()))))
    resumed.fold.apply_all(log.records)

    replay = ReadModels(window)
    for record in log.records:
        replay.apply(record)

    for other in (in_batches, resumed.model, replay.models.allocator):
        assert state_of(other) == state_of(at_once)
        assert other.retirement == at_once.retirement
        mine, theirs = other.allocations, at_once.allocations
        for index in ("pending_ids", "active_ids", "kept_ids", "held_ids", "last_placed", "by_status"):
            assert getattr(mine, index) == getattr(theirs, index), index
        assert mine.by_user.rows == theirs.by_user.rows

    everything = model_of(log.records, 10**9)
    for alloc_id, state in everything.allocations.allocations.items():
        if not state.terminal or state.kept:
            assert at_once.allocations.allocations[alloc_id] == state
    assert at_once.held_by("alice") == everything.held_by("alice")
    assert at_once.held_by("bob") == everything.held_by("bob")


@settings(max_examples=100, deadline=None)
@given(
    ends=st.lists(st.integers(0, 7200), min_size=1, max_size=30),
    window=st.sampled_from([60.0, 600.0, 3600.0]),
)
def test_exactly_what_ended_longer_than_the_window_ago_is_gone(ends: list[int], window: float) -> None:
    """Tried: allocations released at times drawn at random (seconds after T0, in order), then
    one more event. Must hold: exactly those released at least the window before the last
    event's time are gone; the rest are held."""
    log = pool()
    ends = sorted(ends)
    for i, at in enumerate(ends):
        log.now = T0 + timedelta(seconds=at)
        released(log, f"a{i}")
    tick(log, timedelta(seconds=1))
    clock: datetime = log.now

    model = model_of(log.records, window)

    gone = {f"a{i}" for i, at in enumerate(ends) if T0 + timedelta(seconds=at + window) <= clock}
    assert set(model.allocations.allocations) == {f"a{i}" for i in range(len(ends))} - gone


def test_the_gateways_view_lets_go_of_what_ended_as_the_allocators_model_does() -> None:
    """Tried: the gateway's view (which folds every allocation too) fed a1 released and a2
    exited keeping its container, then a host event past the window. Must hold: a1 is gone
    from the view; a2, kept (the gateway still serves its container's files), stays."""
    log = pool()
    released(log, "a1")
    placed(log, "a2", "alice", "h1", spec(1))
    log.add(
        alloc_stream("a2"),
        AllocationExited(alloc_id="a2", host_id="h1", exit_code=0, kept_until=T0 + 4 * HOUR),
    )
    log.now += 2 * HOUR
    log.add(host_stream("h2"), HostEnrolled(host_id="h2", name="h2", nkey="UH2"))
    view = GatewayView()
    Fold(view, reader="test").apply_all(log.records)
    assert view.retirement.retention_s == DEFAULT_RETENTION_S
    assert set(view.allocations.allocations) == {"a1", "a2"}  # 2 h < the default window

    short = GatewayView(retirement=Retirement(retention_s=3600))
    Fold(short, reader="test").apply_all(log.records)
    assert short.allocation("a1") is None
    assert short.allocation("a2") is not None
    assert list(short.allocations.by_user.ids("alice")) == ["a2"]
