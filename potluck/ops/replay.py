"""`potluck ops replay`: every read model rebuilt from the log, at the head or at a past moment,
and compared with what the running services hold.

- `replay_until(store, until)` folds the log up to a position (inclusive) or
  up to the last event recorded at or before a time: the pool as it was then.
- `check(store, live)` replays up to the very position each live model
  reports (a service answers with its models and its position together), so
  a running service that is still catching up is not a difference; every
  field that differs is one, listed by its path.

Positions have holes (rolled-back appends burn sequence values), so "the
state at position P" is the fold of every event at or below P.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from potluck.events import EventStore
from potluck.kernel.durations import parse_duration
from potluck.ops import OpsError
from potluck.ops.live import LiveModel
from potluck.ops.status import skipped_entries
from potluck.projections import Progress, ReadModels

__all__ = [
    "CheckResult",
    "Comparison",
    "Until",
    "check",
    "differences",
    "parse_until",
    "replay_until",
]

_AGO = re.compile(r"^\s*(.+?)\s+ago\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Until:
    """A moment of the log: a position, or a time (events recorded at or before it)."""

    position: int | None = None
    time: datetime | None = None
    text: str = ""


def parse_until(value: str, *, now: datetime | None = None) -> Until:
    """`1200` (a position), `2025-11-28T10:00:00Z` (a time; without a zone, UTC) or `15m ago`."""
    text = value.strip()
    if text.isdigit():
        return Until(position=int(text), text=text)
    ago = _AGO.match(text)
    if ago:
        try:
            seconds = parse_duration(ago.group(1))
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            raise OpsError(f"--until {value!r}: {ago.group(1)!r} is not a duration; write e.g. '15m ago'")
        return Until(time=(now or datetime.now(UTC)) - timedelta(seconds=seconds), text=text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise OpsError(
            f"--until {value!r} is neither a log position (e.g. 1200), a time "
            "(e.g. 2025-11-28T10:00:00Z) nor a time ago (e.g. '15m ago')"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return Until(time=at, text=text)


async def replay_until(
    store: EventStore, until: Until | None = None, *, progress: Progress | None = None, batch_size: int = 5000
) -> ReadModels:
    """The read models at `until` (None: the head); OpsError for a moment the log has not reached."""
    head = await store.head_position()
    if until is not None and until.position is not None and until.position > head:
        raise OpsError(f"position {until.position} is past the end of the log (the head is at {head})")
    if until is not None and until.time is not None and until.time > datetime.now(UTC) + timedelta(seconds=1):
        raise OpsError(f"{until.time.isoformat()} is in the future; the log can only show the past")
    return await ReadModels().advance(
        store,
        until_position=until.position if until else None,
        until_time=until.time if until else None,
        progress=progress,
        batch_size=batch_size,
        head=head,
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def differences(replayed: Any, live: Any, path: str = "") -> list[str]:
    """Every difference between two canonical models, one line each, by path."""
    if isinstance(replayed, dict) and isinstance(live, dict):
        out: list[str] = []
        for key in sorted(set(replayed) | set(live), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in live:
                out.append(f"{where}: only in the replay: {_show(replayed[key])}")
            elif key not in replayed:
                out.append(f"{where}: only in the live model: {_show(live[key])}")
            else:
                out.extend(differences(replayed[key], live[key], where))
        return out
    if isinstance(replayed, list) and isinstance(live, list) and len(replayed) == len(live):
        out = []
        for i, (a, b) in enumerate(zip(replayed, live, strict=True)):
            out.extend(differences(a, b, f"{path}[{i}]"))
        return out
    if replayed != live:
        return [f"{path}: replay {_show(replayed)}, live {_show(live)}"]
    return []


@dataclass(frozen=True)
class Comparison:
    service: str
    position: int
    compared: dict[str, int]
    differences: list[str]


@dataclass
class CheckResult:
    models: ReadModels
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not c.differences for c in self.comparisons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "position": self.models.position,
            "events": self.models.folded,
            "comparisons": [
                {
                    "service": c.service,
                    "position": c.position,
                    "compared": c.compared,
                    "differences": c.differences,
                }
                for c in self.comparisons
            ],
            "skipped_events": [
                {"position": s.position, "stream": s.stream, "type": s.type, "error": s.error}
                for s in skipped_entries(self.models.skipped)[1]
            ],
        }


async def check(
    store: EventStore, live: Sequence[LiveModel], *, progress: Progress | None = None, batch_size: int = 5000
) -> CheckResult:
    """Replay to each live model's own position and compare; then on to the head."""
    head = await store.head_position()
    models = ReadModels()
    comparisons = []
    for model in sorted(live, key=lambda m: m.position):
        if model.position > head:
            raise OpsError(
                f"the {model.service} reports position {model.position}, past the log's head {head}: "
                "is it connected to another database?"
            )
        await models.advance(
            store, until_position=model.position, progress=progress, batch_size=batch_size, head=head
        )
        replayed = _plain(models.to_dict())
        mine = {part: replayed[part] for part in model.models if part in replayed}
        unknown = sorted(set(model.models) - set(replayed))
        found = differences(mine, model.models)
        found.extend(f"{part}: the live model has it, the replay has no such model" for part in unknown)
        comparisons.append(
            Comparison(
                service=model.service,
                position=model.position,
                compared={part: len(rows) for part, rows in model.models.items() if isinstance(rows, dict)},
                differences=found,
            )
        )
    await models.advance(store, progress=progress, batch_size=batch_size, head=head)
    return CheckResult(models, comparisons)
