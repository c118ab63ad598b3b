"""Checkpoints of a service's whole fold, so that a restart resumes from a position.

A service (the allocator, the registry) folds the whole log into memory. Over a
long log that fold is what a restart waits for, so from time to time the
service keeps its fold's state in the `checkpoints` table together with the log
position it has folded to (the table: checkpoint_table.py, defined with sqlmodel): one
row, written in one statement, so the state and
its position can never disagree (the tracking-table pattern). At start the
service loads the newest checkpoint its code can read and folds only the log
after that position, with the same `Fold` as before.

The log stays the only source of truth. A checkpoint is read only when it was
written by the same fold (`fold`: the fold's name and its own version, bumped by
hand when the fold's logic changes) over the same state shapes (`schema`: a
hash of the source of every module whose classes the state holds, as the process
loaded it (remember_sources), listed in the row, so any change to them makes old
checkpoints stale by itself). A checkpoint
that is missing, stale, beyond the log's head or unreadable means a full fold
and a warning, never an error; `potluck ops replay` never reads checkpoints.

The state is pickled: the allocator's model is plain classes (slots, dicts of
frozen dataclasses) that no schema library describes, pickle restores it
exactly (the determinism tests compare it with a fold from zero), and the model
needs no second description to stay in step with. Only the services write this
table, with the same rights as they write the log itself; and since a pickle may
name any callable, a checkpoint is unpickled with only the state's own classes
allowed (`_StateUnpickler`), so a forged row can cost a full fold, never run code.

A checkpoint is taken between two folded batches (the state is then consistent): the
process forks, and the child pickles the state it was given into a pipe while the parent
goes on folding and deciding (Redis' BGSAVE). The loop pauses only for the fork and a
sampled walk of the state (logged as `pause_ms`); pickling the allocator's model of a
1,000,000-event log took 9 s on the loop before (bench/README.md, `scale: restart_s`).
"""

import asyncio
import gc
import hashlib
import io
import os
import pickle
import sys
import time
import types
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from potluck.events.store import EventStore

__all__ = [
    "Checkpoint",
    "Checkpointer",
    "Checkpoints",
    "checkpoint_policy",
    "remember_sources",
    "schema_of",
    "state_modules",
]

log = structlog.get_logger(__name__)

#: How far `state_modules` looks into each container: its items are of a few types only.
_SAMPLE = 8


@dataclass(frozen=True)
class Checkpoint:
    position: int
    state: Any


def state_modules(state: object) -> list[str]:
    """The modules defining the classes `state` holds (a few items of each container looked at)."""
    found: set[str] = set()
    seen: set[int] = set()
    todo: list[object] = [state]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        cls = type(item)
        module = cls.__module__
        if module != "builtins":
            found.add(module)
        if isinstance(item, str | bytes | int | float | bool) or item is None:
            continue
        if isinstance(item, dict):
            for key, value in list(item.items())[:_SAMPLE]:
                todo.extend((key, value))
        elif isinstance(item, list | tuple | set | frozenset):
            todo.extend(list(item)[:_SAMPLE])
        else:
            if hasattr(item, "__dict__"):
                todo.extend(vars(item).values())
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(item, slot):
                    todo.append(getattr(item, slot))
            pydantic_extra = getattr(item, "__pydantic_fields__", None)
            if pydantic_extra is not None and not hasattr(item, "__dict__"):
                todo.extend(getattr(item, name) for name in pydantic_extra)
    return sorted(found)


#: Each module's source digest as this process first read it: what the process runs, not what is
#: on disk now. An upgrade replaces the files under a running service, whose next checkpoint must
#: not claim the new code's shapes (the new process would then load a state it cannot use). Keyed
#: by the module object, so a module imported anew is read anew.
_SOURCES: "weakref.WeakKeyDictionary[types.ModuleType, bytes]" = weakref.WeakKeyDictionary()


def _source_digest(module: types.ModuleType) -> bytes | None:
    known = _SOURCES.get(module)
    if known is not None:
        return known
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    try:
        with open(path, "rb") as source:
            digest = hashlib.sha256(source.read()).digest()
    except OSError:
        return None
    _SOURCES[module] = digest
    return digest


def remember_sources() -> None:
    """Read the source of every module a fold's state may hold a class of that is loaded now.

    Called as a service starts, right after its imports: later checkpoints are then stamped with
    the code the process loaded, even if the files change under it."""
    for name, module in list(sys.modules.items()):
        if name in _STATE_MODULES or name.startswith(_STATE_PACKAGES):
            _source_digest(module)


def schema_of(modules: Iterable[str]) -> str | None:
    """A hash of the source of `modules` as this process loaded them (None: one is missing)."""
    digest = hashlib.sha256()
    for name in modules:
        module = sys.modules.get(name)
        source = _source_digest(module) if module is not None else None
        if source is None:
            return None
        digest.update(name.encode() + b"\0" + source + b"\0")
    return digest.hexdigest()[:16]


#: Where the classes of a fold's state are defined: a checkpoint may name no other.
_STATE_PACKAGES = ("potluck.readmodels.", "potluck.contracts.", "potluck.allocator.", "potluck.registry.")
_STATE_MODULES = frozenset({"potluck.events.projection"})
#: The library classes a fold's state holds (values, no behaviour on construction).
_LIBRARY_CLASSES = frozenset(
    {
        ("collections", "deque"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("uuid", "UUID"),
        ("decimal", "Decimal"),
        ("pydantic_core._pydantic_core", "TzInfo"),
        # A job's attempts (potluck.readmodels.jobs): the C map, or its pure-Python twin where
        # the extension could not be built.
        ("immutables._map", "Map"),
        ("immutables.map", "Map"),
    }
)


class _StateUnpickler(pickle.Unpickler):
    """Unpickles only the classes a fold's state is made of.

    Plain `pickle.loads` calls whatever a pickle names (`os.system` among others): anyone
    who could write one row of this table would run code in the service that loads it. A
    checkpoint may name only classes defined in Potluck's state modules, and a few library
    value classes; anything else makes it unreadable, which means a fold from zero.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _LIBRARY_CLASSES:
            return super().find_class(module, name)
        if module in _STATE_MODULES or module.startswith(_STATE_PACKAGES):
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                return found
        raise pickle.UnpicklingError(f"a checkpoint may not name {module}.{name}")


def _unpickled(data: bytes) -> Any:
    # Unpickling makes millions of objects, none garbage: without the cyclic GC's passes over
    # them, 147,000 allocations load in 2.7 s instead of 6.2 (bench/README.md, restart_s).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _StateUnpickler(io.BytesIO(data)).load()
    finally:
        if enabled:
            gc.enable()


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


class Checkpoints:
    """The checkpoints of one reader's fold (`name` at `fold_version`)."""

    def __init__(self, store: EventStore, reader: str, name: str, fold_version: int) -> None:
        remember_sources()
        self.store = store
        self.reader = reader
        self.fold = f"{name}/{fold_version}"
        #: How long the last `encode_aside` held the event loop (the sampling and the fork).
        self.pause_ms = 0.0

    async def load(self) -> Checkpoint | None:
        """The newest checkpoint this code can read, or None (then fold from zero)."""
        try:
            rows = await self.store.pool.fetch(
                "SELECT schema, modules, position FROM checkpoints WHERE reader = $1 AND fold = $2 "
                "ORDER BY position DESC",
                self.reader,
                self.fold,
            )
            head = await self.store.head_position()
        except Exception as exc:  # a checkpoint is never worth a crash
            log.warning("checkpoint.unreadable", reader=self.reader, error=str(exc)[:200])
            return None
        for schema, modules, position in rows:
            if schema != schema_of(m for m in modules.split(",") if m):
                continue
            if position > head:
                log.warning(
                    "checkpoint.beyond_log",
                    reader=self.reader,
                    position=position,
                    head=head,
                    hint="the log is shorter than the checkpoint says: folding from zero",
                )
                return None
            return await self._read(schema, position)
        if rows:
            log.warning(
                "checkpoint.stale",
                reader=self.reader,
                fold=self.fold,
                found=len(rows),
                hint="the code of the fold changed since they were taken: folding from zero",
            )
        return None

    async def _read(self, schema: str, position: int) -> Checkpoint | None:
        started = time.perf_counter()
        try:
            data = await self.store.pool.fetchval(
                "SELECT state FROM checkpoints WHERE reader = $1 AND fold = $2 AND schema = $3",
                self.reader,
                self.fold,
                schema,
            )
            state = _unpickled(data)
        except Exception as exc:  # unreadable: the log still has everything
            log.warning(
                "checkpoint.unreadable",
                reader=self.reader,
                position=position,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                hint="folding from zero; the next checkpoint replaces it",
            )
            return None
        log.info(
            "checkpoint.loaded",
            reader=self.reader,
            position=position,
            bytes=len(data),
            load_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return Checkpoint(position, state)

    def encode(self, state: object) -> tuple[str, str, bytes]:
        """(modules, schema, data) of `state`: run between two folded batches."""
        modules = state_modules(state)
        schema = schema_of(modules) or ""
        return ",".join(modules), schema, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    async def encode_aside(self, state: object) -> tuple[str, str, bytes]:
        """As `encode`, but the pickling runs in a forked child (as Redis' BGSAVE does): the
        fork is the state's copy-on-write snapshot, so the loop pauses only for the fork and
        the fold goes on while the child pickles into a pipe."""
        paused = time.perf_counter()
        modules = state_modules(state)
        schema = schema_of(modules) or ""
        if not hasattr(os, "fork"):
            return ",".join(modules), schema, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: pickle, write, leave without running anything of the parent's
            code = 0
            try:
                os.close(readable)
                with os.fdopen(writable, "wb") as pipe:
                    pickle.dump(state, pipe, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(writable)
        self.pause_ms = round((time.perf_counter() - paused) * 1000, 1)
        try:
            data = await asyncio.to_thread(_read_all, readable)
        finally:
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the child pickling the checkpoint failed (status {status})")
        return ",".join(modules), schema, data

    async def save(self, position: int, encoded: tuple[str, str, bytes]) -> None:
        """Keep `encoded` as the fold up to `position`, unless a later one is kept; in the same
        transaction, drop this reader's checkpoints of other code that are a day old."""
        modules, schema, data = encoded
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO checkpoints (reader, fold, schema, modules, position, state) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (reader, fold, schema) DO UPDATE SET "
                "modules = excluded.modules, position = excluded.position, state = excluded.state, "
                "taken_at = now() WHERE checkpoints.position < excluded.position",
                self.reader,
                self.fold,
                schema,
                modules,
                position,
                data,
            )
            await conn.execute(
                "DELETE FROM checkpoints WHERE reader = $1 AND (fold, schema) <> ($2, $3) "
                "AND taken_at < now() - interval '1 day'",
                self.reader,
                self.fold,
                schema,
            )


def checkpoint_policy() -> dict[str, float]:
    """How often services checkpoint: POTLUCK_CHECKPOINT_EVERY_EVENTS (events folded, default
    100000) and POTLUCK_CHECKPOINT_EVERY_S (seconds, default 300), whichever comes first."""
    policy: dict[str, float] = {}
    for name, key, default in (
        ("POTLUCK_CHECKPOINT_EVERY_EVENTS", "every_events", 100_000),
        ("POTLUCK_CHECKPOINT_EVERY_S", "every_s", 300.0),
    ):
        raw = os.environ.get(name, "")
        try:
            value = float(raw) if raw else float(default)
        except ValueError:
            hint = f"set it to e.g. {default}, or unset it"
            raise ValueError(f"{name}={raw!r} is not a number; {hint}") from None
        if value <= 0:
            raise ValueError(f"{name}={raw!r} must be above 0; set it to e.g. {default}, or unset it")
        policy[key] = value
    return policy


class Checkpointer:
    """Takes a checkpoint every `every_events` events folded or `every_s` seconds (when the
    position moved), until cancelled. `state` and `position` read the fold as it is now."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        state: Callable[[], object],
        position: Callable[[], int],
        *,
        every_events: float = 100_000,
        every_s: float = 300.0,
        tick_s: float = 1.0,
        saved_at: int = 0,
    ) -> None:
        self.checkpoints = checkpoints
        self.state = state
        self.position = position
        self.every_events = every_events
        self.every_s = every_s
        self.tick_s = tick_s
        #: The position of the newest checkpoint kept (or loaded at start).
        self.saved_at = saved_at
        self._last = time.monotonic()

    def due(self) -> bool:
        moved = self.position() - self.saved_at
        return moved >= self.every_events or (moved > 0 and time.monotonic() - self._last >= self.every_s)

    async def take(self) -> None:
        """Encode now (the state is consistent between batches, and the fork that snapshots
        it happens before the first await), then write."""
        position = self.position()
        started = time.perf_counter()
        encoded = await self.checkpoints.encode_aside(self.state())
        encode_ms = round((time.perf_counter() - started) * 1000, 1)
        await self.checkpoints.save(position, encoded)
        self.saved_at = position
        self._last = time.monotonic()
        log.info(
            "checkpoint.saved",
            reader=self.checkpoints.reader,
            position=position,
            bytes=len(encoded[2]),
            encode_ms=encode_ms,
            pause_ms=self.checkpoints.pause_ms,
            total_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            if not self.due():
                continue
            try:
                await self.take()
            except Exception as exc:  # a failed checkpoint costs only a longer restart
                self._last = time.monotonic()
                log.warning(
                    "checkpoint.failed",
                    reader=self.checkpoints.reader,
                    error=f"{type(exc).__name__}: {str(exc)[:200]}",
                    hint="the service goes on; a restart folds more of the log until one is kept",
                )
