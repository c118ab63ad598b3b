"""`potluck ops replay`: every read model rebuilt from the log, at the head or at a past moment,
and compared with what the running services hold.

- `replay_until(store, until)` folds the log up to a position (inclusive) or
  up to the last event recorded at or before a time: the pool as it was then.
- `check(store, live)` replays up to the very position each live service
  reports (a service answers with its position), so a running service that is
  still catching up is not a difference; every field that differs is one,
  listed by its path. The services answer digests, never their whole models
  (potluck.readmodels.digests): only the rows that differ are fetched, the
  first SHOWN_ROWS of a model field by field, the rest named by key.

Positions have holes (rolled-back appends burn sequence values), so "the
state at position P" is the fold of every event at or below P.

Events moved by `potluck ops archive` are folded with the rest: the store reads the
archive and the hot table as one log, in position order (tests/e2e/test_ops_archive.py).
"""

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from potluck.events import EventStore
from potluck.kernel.digits import is_digits
from potluck.kernel.durations import parse_duration
from potluck.ops import LiveUnavailable, OpsError
from potluck.ops.live import ATTEMPTS, LiveModel, MemorySource, Moved, Source, Summary
from potluck.ops.status import skipped_entries
from potluck.projections import Progress, ReadModels
from potluck.readmodels.digests import bucket_digests, differing_buckets, differing_keys, key_digests, keyed
from potluck.readmodels.retention import DEFAULT_RETENTION_S

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
    if is_digits(text):
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
    store: EventStore,
    until: Until | None = None,
    *,
    progress: Progress | None = None,
    batch_size: int = 5000,
    retention_s: float = DEFAULT_RETENTION_S,
) -> ReadModels:
    """The read models at `until` (None: the head); OpsError for a moment the log has not reached."""
    head = await store.head_position()
    if until is not None and until.position is not None and until.position > head:
        raise OpsError(f"position {until.position} is past the end of the log (the head is at {head})")
    if until is not None and until.time is not None and until.time > datetime.now(UTC) + timedelta(seconds=1):
        raise OpsError(f"{until.time.isoformat()} is in the future; the log can only show the past")
    return await ReadModels(retention_s).advance(
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


#: Differing rows fetched and shown field by field, per model; the rest are named by key only.
SHOWN_ROWS = 50
#: Keys named at most in the line that counts the rest.
NAMED_KEYS = 200


def _canonical(models: ReadModels) -> dict[str, Any]:
    """The replayed models in the form the services answer in (potluck.allocator.canonical)."""
    return models.to_dict()


async def _compare(
    source: Source, summary: Summary, replayed: dict[str, Any]
) -> tuple[dict[str, int], list[str]]:
    """Compare by bucket digests, then by row digests in the buckets that differ, then field by field
    for the first SHOWN_ROWS rows that differ. Moved when the service moves meanwhile."""
    found: list[str] = []
    compared: dict[str, int] = {}
    at = summary.position
    for part in sorted(summary.models):
        live = summary.models[part]
        compared[part] = live.count
        if part not in replayed:
            found.append(f"{part}: the live model has it, the replay has no such model")
            continue
        mine = keyed(replayed[part])
        keys: list[str] = []
        buckets = differing_buckets(bucket_digests(mine, live.buckets), live.digests)
        unexamined = 0
        for n, index in enumerate(buckets):
            if len(keys) > SHOWN_ROWS + NAMED_KEYS:
                # Enough to show and name: a model that differs throughout is not fetched whole.
                unexamined = len(buckets) - n
                break
            theirs = await source.bucket(part, index, live.buckets, at=at)
            keys.extend(differing_keys(key_digests(mine, index, live.buckets), theirs))
        keys.sort()
        shown = keys[:SHOWN_ROWS]
        rows = await source.rows(part, shown, at=at) if shown else {}
        for key in shown:
            where = f"{part}.{key}"
            if key not in rows:
                found.append(f"{where}: only in the replay: {_show(replayed[part][key])}")
            elif key not in replayed[part]:
                found.append(f"{where}: only in the live model: {_show(rows[key])}")
            else:
                lines = differences(_plain(replayed[part][key]), rows[key], where)
                found.extend(lines or [f"{where}: the digests differ but the rows read alike"])
        rest = keys[SHOWN_ROWS:]
        if rest:
            named = ", ".join(rest[:NAMED_KEYS]) + (", ..." if len(rest) > NAMED_KEYS else "")
            found.append(f"{part}: {len(rest)} more rows differ: {named}")
        if unexamined:
            found.append(
                f"{part}: and more in {unexamined} of {live.buckets} buckets of rows not examined "
                f"({live.count} rows live, {len(replayed[part])} replayed)"
            )
    return compared, found


def _retention_of(summaries: Sequence[Summary]) -> float:
    """The retention window the live allocators fold with (retention.py): the replay folds with
    it too, or it would hold rows they dropped long ago, or miss rows they still hold."""
    windows = {s.retention_s for s in summaries if s.retention_s is not None}
    if len(windows) > 1:
        raise OpsError(
            f"the allocators fold with different retention windows ({sorted(windows)} s): give them "
            "all the same --retention (POTLUCK_ALLOCATOR_RETENTION), or their models cannot agree"
        )
    return windows.pop() if windows else DEFAULT_RETENTION_S


async def _same_log(store: EventStore, service: str, summary: Summary) -> None:
    """OpsError unless the service's event at its position is this log's: an operator who gave
    --database-url of a restored copy while POTLUCK_HOME named another pool was told of eight
    differences, all between two different logs."""
    if summary.event_id is None or summary.position <= 0:
        return
    here = await store.read_all(summary.position - 1, 1)
    if here and here[0].position == summary.position and str(here[0].event_id) == summary.event_id:
        return
    raise OpsError(
        f"the {service} follows another event log than this one: its event at position "
        f"{summary.position} is not this log's. Compare a pool with its own log: give the "
        "--database-url and --nats-url (or POTLUCK_HOME) of the same pool"
    )


async def check(
    store: EventStore,
    live: Sequence[LiveModel | Source],
    *,
    progress: Progress | None = None,
    batch_size: int = 5000,
) -> CheckResult:
    """Replay to each service's own position and compare, by digests; then on to the head.

    A service that moves on while it is compared is asked again from its new position (the
    replay only goes forward: a service behind the replay is waited for a moment)."""
    head = await store.head_position()
    sources = [MemorySource(x) if isinstance(x, LiveModel) else x for x in live]
    firsts = [(await source.summary(), source) for source in sources]
    for summary, source in firsts:
        await _same_log(store, source.service, summary)
    models = ReadModels(_retention_of([summary for summary, _ in firsts]))
    replayed: dict[str, Any] = {}
    replayed_at = -1
    comparisons = []
    for summary, source in sorted(firsts, key=lambda pair: pair[0].position):
        for attempt in range(ATTEMPTS):
            if summary.position > head:
                head = await store.head_position()
                if summary.position > head:
                    raise OpsError(
                        f"the {source.service} reports position {summary.position}, past the log's head "
                        f"{head}: is it connected to another database?"
                    )
            if summary.position < models.position:
                # Another replica, or a service still folding what the replay already has.
                await asyncio.sleep(0.2 * (attempt + 1))
                summary = await source.summary()
                continue
            await models.advance(
                store, until_position=summary.position, progress=progress, batch_size=batch_size, head=head
            )
            if replayed_at != models.position:
                replayed, replayed_at = _canonical(models), models.position
            try:
                compared, found = await _compare(source, summary, replayed)
            except Moved:
                summary = await source.summary()
                continue
            comparisons.append(Comparison(source.service, summary.position, compared, found))
            break
        else:
            raise LiveUnavailable(
                f"the {source.service} kept moving (or stayed behind position {models.position}) "
                f"while it was compared ({ATTEMPTS} tries); run the check again when the pool is quieter"
            )
    await models.advance(store, progress=progress, batch_size=batch_size, head=max(head, models.position))
    return CheckResult(models, comparisons)
