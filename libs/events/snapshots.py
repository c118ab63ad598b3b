"""Snapshots of a stream's fold, so that loading a long stream stays bounded.

A host's stream grows with every registration, silence and recovery; deciding a
command on it from version 0 costs more each month. A snapshot is the fold's
state at one version of the stream, kept in the `snapshots` table beside the
log. Events never change, so a snapshot stays true for as long as the fold that
made it: `kind` names the fold and its shape (`_kind`), and a
snapshot of another kind is never read. The log stays the only source of truth:
a snapshot that is missing, of another kind or unreadable is a full read, never
an error, and `potluck ops replay` never reads them.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from pydantic import TypeAdapter, ValidationError

from potluck.events.store import EventStore

__all__ = ["Snapshot", "Snapshots"]

log = structlog.get_logger(__name__)

S = TypeVar("S")


# Built once per fold: a registry makes a Snapshots for every command it decides on a host.
_adapters: dict[type[Any], TypeAdapter[Any]] = {}
_kinds: dict[tuple[str, int, type[Any]], str] = {}


def _adapter(state_type: type[Any]) -> TypeAdapter[Any]:
    if state_type not in _adapters:
        _adapters[state_type] = TypeAdapter(state_type)
    return _adapters[state_type]


def _kind(name: str, fold_version: int, state_type: type[Any]) -> str:
    key = (name, fold_version, state_type)
    if key not in _kinds:
        schema = json.dumps(_adapter(state_type).json_schema(), sort_keys=True)
        _kinds[key] = f"{name}/{fold_version}/{hashlib.sha256(schema.encode()).hexdigest()[:12]}"
    return _kinds[key]


@dataclass(frozen=True)
class Snapshot(Generic[S]):
    version: int
    state: S


class Snapshots(Generic[S]):
    """Snapshots of one fold (`name`, at `fold_version`) whose state is of type `state_type`.

    `fold_version` is the fold's own: bump it when the fold's logic changes what a given
    stream folds to. A change of the state's fields changes the kind by itself.
    """

    def __init__(self, store: EventStore, name: str, fold_version: int, state_type: type[S]) -> None:
        self.store = store
        self.kind = _kind(name, fold_version, state_type)
        self._adapter: TypeAdapter[S] = _adapter(state_type)

    async def load(self, stream: str) -> Snapshot[S] | None:
        row = await self.store.pool.fetchrow(
            "SELECT version, state::text FROM snapshots WHERE stream = $1 AND kind = $2", stream, self.kind
        )
        if row is None:
            return None
        try:
            return Snapshot(int(row[0]), self._adapter.validate_json(row[1]))
        except ValidationError as exc:
            log.warning("snapshot.unreadable", stream=stream, kind=self.kind, error=str(exc)[:200])
            return None

    async def save(self, stream: str, version: int, state: S) -> None:
        """Keep `state` as the fold of `stream` up to `version`, unless a later one is kept."""
        await self.store.pool.execute(
            "INSERT INTO snapshots (stream, kind, version, state) VALUES ($1, $2, $3, $4::jsonb) "
            "ON CONFLICT (stream, kind) DO UPDATE SET version = excluded.version, "
            "state = excluded.state, taken_at = now() WHERE snapshots.version < excluded.version",
            stream,
            self.kind,
            version,
            self._adapter.dump_json(state).decode(),
        )
