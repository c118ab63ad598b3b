"""Checkpoints of a fold (potluck.events.checkpoints), without servers.

What must hold: the sqlmodel table and the SQL migration that creates it agree; a state
encoded and decoded is the state it was; the schema hash covers the modules whose classes
the state holds and changes when their source does; the policy read from the environment
refuses nonsense with a hint; and the allocator's model resumed from a checkpoint taken
halfway and fed the rest folds to exactly what a fold from zero gives.
"""

import asyncio
import importlib
import os
import pickle
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.model import AllocatorModel
from potluck.contracts.job_events import JobSpec, JobSubmitted, JobTaskRequested, job_stream
from potluck.events import Event
from potluck.events.checkpoint_table import CheckpointRow
from potluck.events.checkpoints import (
    Checkpoint,
    Checkpoints,
    _unpickled,
    checkpoint_policy,
    schema_of,
    state_modules,
)
from tests.unit.test_allocator_model import (
    RecordingLog,
    cap,
    folded,
    host,
    placed,
    recorded,
    spec,
    state_of,
    steps,
)

MIGRATION = Path(__file__).parents[2] / "libs/events/migrations/0004_checkpoints.sql"


def _migration_columns() -> dict[str, tuple[str, bool]]:
    """Column -> (type, nullable) as the migration's CREATE TABLE says."""
    body = re.search(r"CREATE TABLE checkpoints \((.*?)\n\);", MIGRATION.read_text(), re.S)
    assert body is not None
    columns = {}
    for line in body.group(1).strip().splitlines():
        words = line.strip().rstrip(",").split()
        if words[0] == "PRIMARY":
            continue
        columns[words[0]] = (words[1], "NOT NULL" not in line)
    return columns


def test_the_sqlmodel_table_and_the_migration_agree() -> None:
    """The migration runs, the sqlmodel class documents and types the rows: the same columns,
    types, nullability and primary key in both."""
    table = CheckpointRow.__table__  # type: ignore[attr-defined]
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    ours = {c.name: (c.type.compile(dialect=dialect).lower(), c.nullable) for c in table.columns}
    synonyms = {"timestamp with time zone": "timestamptz", "varchar": "text"}
    ours = {name: (synonyms.get(kind, kind), nullable) for name, (kind, nullable) in ours.items()}
    assert ours == _migration_columns()
    key = re.search(r"PRIMARY KEY \(([^)]*)\)", MIGRATION.read_text())
    assert key is not None
    assert [c.name for c in table.primary_key.columns] == [c.strip() for c in key.group(1).split(",")]


def plain(item: object) -> object:
    """`item` as nested builtins, whatever its classes (slots, plain attributes) and whatever
    objects it shares: two states compare equal when every field of every object does."""
    if isinstance(item, dict):
        return {plain(k): plain(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [plain(v) for v in item]
    if isinstance(item, set | frozenset):
        return sorted((plain(v) for v in item), key=repr)
    fields = dict(vars(item)) if hasattr(item, "__dict__") else {}
    fields.update({slot: getattr(item, slot) for slot in getattr(type(item), "__slots__", ())})
    if not fields:
        return item
    return (type(item).__name__, {k: plain(v) for k, v in fields.items()})


def _engine() -> AllocatorEngine:
    """An engine to fold records into by hand: no store, nothing is read or appended here."""
    return AllocatorEngine(None)  # type: ignore[arg-type]


def _pool_log() -> RecordingLog:
    log = RecordingLog()
    for i in range(3):
        host(log, f"h{i}", cap(4, 8))
    for i in range(12):
        placed(log, f"a{i}", "ann" if i % 2 else "bob", f"h{i % 3}", spec(0.5))
    return log


def test_a_state_encoded_and_decoded_is_the_same_and_names_its_modules() -> None:
    """Encode the allocator's model as a checkpoint does, on the loop and in a forked child;
    decoding either gives an equal model, and the modules its classes come from are those the
    schema hash covers."""
    engine = _engine()
    engine.fold.apply_all(_pool_log().records)
    checkpoints = Checkpoints(None, "allocator", "m", 1)  # type: ignore[arg-type]
    modules, schema, data = checkpoints.encode(engine.checkpoint_state())
    parts, skipped = pickle.loads(data)
    assert state_of(AllocatorModel(**parts)) == state_of(engine.model)
    assert state_of(engine.model)["allocations"], "the log placed allocations"
    assert skipped.count == 0
    named = modules.split(",")
    for needed in (
        "potluck.readmodels.allocations",
        "potluck.allocator.capacity",
        "potluck.contracts.capacity",
    ):
        assert needed in named
    assert "potluck.allocator.placement_index" not in named, "the index is rebuilt, never kept"
    assert schema == schema_of(named)
    # Pickled by a forked child instead (what the services do): the same state, the same names.
    aside = asyncio.run(checkpoints.encode_aside(engine.checkpoint_state()))
    assert aside[:2] == (modules, schema)
    assert state_of(AllocatorModel(**pickle.loads(aside[2])[0])) == state_of(engine.model)


def test_a_jobs_attempts_come_back_from_a_checkpoint_as_they_were() -> None:
    """A job with tasks requested, one of them twice (its attempts are a persistent map, a
    library class): through the checkpoint's guarded unpickler, the job is the job folded,
    and a new attempt folds on top of it as it would on the original."""
    log = RecordingLog()
    log.add(
        job_stream("j1"),
        JobSubmitted(job_id="j1", user="ann", spec=JobSpec(tasks=3, task=spec(0.5), lifetime_s=60)),
    )
    for index, alloc_id in ((0, "t0"), (1, "t1"), (0, "t0-again")):
        log.add(
            job_stream("j1"), JobTaskRequested(job_id="j1", task_index=index, alloc_id=alloc_id, attempt=1)
        )
    engine = _engine()
    engine.fold.apply_all(log.records)
    job = engine.model.jobs.jobs["j1"]
    assert dict(job.attempts) == {0: ("t0", "t0-again"), 1: ("t1",)}

    state = _unpickled(pickle.dumps(engine.checkpoint_state()))
    resumed = _engine()
    resumed.resume(Checkpoint(engine.position, state))
    assert resumed.model.jobs.jobs["j1"] == job
    log.add(job_stream("j1"), JobTaskRequested(job_id="j1", task_index=2, alloc_id="t2", attempt=1))
    engine.fold.apply_all(log.records)
    resumed.fold.apply_all(log.records)
    assert resumed.model.jobs.jobs["j1"] == engine.model.jobs.jobs["j1"]
    assert resumed.model.jobs.jobs["j1"].latest(2) == "t2"


def test_the_schema_changes_when_a_module_of_the_state_changes(tmp_path: Path) -> None:
    """A state of a class from a module on disk: its hash is stable while the source is, and
    changes when a process loads a changed source (a field added), so older checkpoints are not
    read. A process whose files change under it (an upgrade before its restart) keeps the hash of
    the code it runs: its next checkpoint must not pass for one of the new code (it once did, and
    the upgraded allocator crashed on an old model without its new index)."""
    (tmp_path / "shape_mod.py").write_text("class Shape:\n    def __init__(self):\n        self.a = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("shape_mod")
        state = {"k": [module.Shape()]}
        modules = state_modules(state)
        assert modules == ["shape_mod"]
        before = schema_of(modules)
        assert before is not None
        assert before == schema_of(modules)
        (tmp_path / "shape_mod.py").write_text(
            "class Shape:\n    def __init__(self):\n        self.a = 1\n        self.b = 2\n"
        )
        assert schema_of(modules) == before, "the running process's code did not change"
        sys.modules.pop("shape_mod")
        importlib.import_module("shape_mod")  # as a restarted process would
        assert schema_of(modules) != before
        assert schema_of(["no_such_module_here"]) is None
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shape_mod", None)


def test_the_policy_refuses_nonsense_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset: the defaults. A bad or non-positive value: an error naming the variable and what to set."""
    monkeypatch.delenv("POTLUCK_CHECKPOINT_EVERY_EVENTS", raising=False)
    monkeypatch.delenv("POTLUCK_CHECKPOINT_EVERY_S", raising=False)
    assert checkpoint_policy() == {"every_events": 100_000, "every_s": 300.0}
    monkeypatch.setenv("POTLUCK_CHECKPOINT_EVERY_S", "soon")
    with pytest.raises(ValueError, match=r"POTLUCK_CHECKPOINT_EVERY_S.*set it to"):
        checkpoint_policy()
    monkeypatch.setenv("POTLUCK_CHECKPOINT_EVERY_S", "0")
    with pytest.raises(ValueError, match="above 0"):
        checkpoint_policy()


@settings(max_examples=100, deadline=None)
@given(history=st.lists(steps(), max_size=40), cut=st.integers(0, 40))
def test_a_model_resumed_from_a_checkpoint_folds_to_what_a_fold_from_zero_gives(
    history: list[tuple[str, Event | None]], cut: int
) -> None:
    """Any log (unreadable events too), a checkpoint taken after any of its events, through
    pickle: a new engine resumed from it and fed the whole log (what the checkpoint holds is
    ignored) holds exactly what a fold from zero holds, indexes included, and counts the same
    skipped events."""
    log = recorded(history)
    cut = min(cut, len(log.records))
    first = _engine()
    first.fold.apply_all(log.records[:cut])
    state = _unpickled(pickle.dumps(first.checkpoint_state()))  # as a service loads it
    resumed = _engine()
    resumed.resume(Checkpoint(first.position, state))
    assert resumed.position == first.position
    resumed.fold.apply_all(log.records)

    zero, fold = folded(log)
    assert state_of(resumed.model) == state_of(zero)
    assert plain(resumed.model.ledger) == plain(zero.ledger)
    assert (resumed.model.jobs, resumed.model.members, resumed.model.images_versions) == (
        zero.jobs,
        zero.members,
        zero.images_versions,
    )
    assert resumed.position == fold.position
    assert resumed.fold.skipped.count == fold.skipped.count
    # The allocations' indexes, which no equality of the view looks at, come back whole too:
    # the fair queue's turns (last_placed) among them.
    kept, again = resumed.model.allocations, zero.allocations
    for index in ("pending_ids", "active_ids", "kept_ids", "held_ids", "last_placed", "by_status"):
        assert getattr(kept, index) == getattr(again, index), index
    assert kept.by_user.rows == again.by_user.rows


class _Forged:
    """What a forged checkpoint row could hold: a pickle that calls os.mkdir when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def test_a_checkpoint_naming_anything_but_state_classes_is_refused_unrun(tmp_path: Path) -> None:
    """A row whose pickle names a callable outside the state's classes (os.mkdir here): loading
    it raises before anything is called (the caller folds from zero), and the directory the
    pickle would have made does not exist; a real state still loads."""
    target = tmp_path / "made-by-a-checkpoint"
    with pytest.raises(pickle.UnpicklingError, match="may not name"):
        _unpickled(pickle.dumps(_Forged(target)))
    assert not target.exists()
    with pytest.raises(pickle.UnpicklingError):
        _unpickled(pickle.dumps(Path("/etc")))  # a library class the state never holds
    assert _unpickled(pickle.dumps(_engine().checkpoint_state())) is not None
