"""The live read models of the running services, for `replay --check` and `status --live`.

The registry (LIST_HOSTS) and the allocator (ALLOCATOR_STATE) answer the
requests of potluck.readmodels.state_pages: counts and bucket digests of each
model, one bucket's row digests, or a page of rows, each answer with the log
position the service had folded when it answered. No answer grows with the
pool: a check of 100,000 allocations asks for digests, then only for the rows
that differ. `LiveSource` asks one service; answers at different positions mean
the service moved between them (`Moved`), and the caller starts over.

Each answer also says which events the service skipped because it could not
decode them (`"skipped": {"count": N, "recent": [...]}`): not a model to
compare with a replay, but what `potluck ops status --live` shows, so it is
kept apart on `LiveModel`. A service too old to say leaves it None.

`LiveModel` holds a service's models whole: fine for a small pool (tests, a
look at a moment), fetched page by page.
"""

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import ALLOCATOR_STATE, LIST_HOSTS
from potluck.ops import LiveUnavailable
from potluck.readmodels.digests import bucket_count, bucket_digests, key_digests, keyed, page_rows
from potluck.readmodels.state_pages import MAX_KEYS_PER_REQUEST

__all__ = [
    "LiveModel",
    "LiveSource",
    "MemorySource",
    "ModelDigests",
    "Moved",
    "Source",
    "Summary",
    "allocator_source",
    "fetch_allocator",
    "fetch_registry",
    "registry_source",
]

#: How often a whole fetch starts over when the service moved in the middle, before giving up.
ATTEMPTS = 5


@dataclass(frozen=True)
class LiveModel:
    """What one running service holds: its position in the log and its models (canonical form)."""

    service: str
    position: int
    models: dict[str, Any]
    #: How many events the service could not decode and skipped (None: it did not say).
    skipped: int | None = None
    #: The last of those it remembers: position, stream, type and error of each.
    skipped_recent: list[dict[str, Any]] = field(default_factory=list)
    #: The retention window the allocator folds with (retention.py); None: another service.
    retention_s: float | None = None


@dataclass(frozen=True)
class ModelDigests:
    count: int
    buckets: int
    digests: list[str]


@dataclass(frozen=True)
class Summary:
    """A service's position and, per model, its row count and bucket digests."""

    position: int
    models: dict[str, ModelDigests]
    skipped: int | None = None
    skipped_recent: list[dict[str, Any]] = field(default_factory=list)
    #: The retention window the allocator folds with (retention.py); None: another service.
    retention_s: float | None = None
    #: The id of the event at `position` as the service read it (None: it does not say).
    event_id: str | None = None


class Moved(Exception):
    """The service answered at another position than the comparison started at."""

    def __init__(self, service: str, was: int, now: int) -> None:
        super().__init__(f"the {service} moved from position {was} to {now}")
        self.now = now


class Source:
    """A service's read models as `replay --check` asks for them."""

    service: str

    async def summary(self) -> Summary:
        raise NotImplementedError

    async def bucket(self, model: str, index: int, buckets: int, *, at: int) -> dict[str, str]:
        """The row digests of one bucket; Moved if not answered at position `at`."""
        raise NotImplementedError

    async def rows(self, model: str, keys: Sequence[str], *, at: int) -> dict[str, Any]:
        """Those rows the service has; Moved if not answered at position `at`."""
        raise NotImplementedError


def _skipped(data: dict[str, Any]) -> tuple[int | None, list[dict[str, Any]]]:
    """Take the `skipped` report out of an answer: (count, recent), (None, []) when absent."""
    skipped = data.pop("skipped", None)
    if not isinstance(skipped, dict):
        return None, []
    recent = skipped.get("recent")
    return int(skipped.get("count", 0)), _plain(recent) if isinstance(recent, list) else []


def _summary_of(data: dict[str, Any]) -> Summary:
    skipped, recent = _skipped(dict(data))
    models = {
        name: ModelDigests(int(m["count"]), int(m.get("buckets", 0)), list(m.get("digests", [])))
        for name, m in dict(data.get("models") or {}).items()
    }
    retention = data.get("retention_s")
    retention_s = float(retention) if isinstance(retention, int | float) else None
    event_id = data.get("event_id")
    return Summary(
        int(data.get("position", 0)),
        models,
        skipped,
        recent,
        retention_s,
        event_id if isinstance(event_id, str) else None,
    )


class LiveSource(Source):
    """One running service, asked over NATS; every answer is one bounded message."""

    def __init__(self, nc: NATS, subject: str, service: str, timeout: float = 5.0) -> None:
        self.nc = nc
        self.subject = subject
        self.service = service
        self.timeout = timeout

    async def ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            msg = await self.nc.request(self.subject, json.dumps(request).encode(), timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise LiveUnavailable(
                f"no {self.service} answered on {self.subject}: is it running (and new enough to answer)?"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise LiveUnavailable(
                f"the {self.service} did not answer on {self.subject} within {self.timeout:g}s "
                "(a larger --timeout gives a busy service more time)"
            ) from None
        try:
            reply = Reply.model_validate_json(msg.data)
        except ValueError as exc:
            raise LiveUnavailable(
                f"the {self.service} answered {self.subject} with something unreadable: {exc}"
            ) from None
        if not reply.ok:
            error = reply.error or {}
            raise LiveUnavailable(f"the {self.service} refused: {error.get('message')} ({error.get('code')})")
        return dict(reply.data)

    async def _ask_at(self, request: Mapping[str, Any], at: int | None) -> dict[str, Any]:
        data = await self.ask(request)
        position = int(data.get("position", 0))
        if at is not None and position != at:
            raise Moved(self.service, at, position)
        return data

    async def summary(self, *, digests: bool = True) -> Summary:
        return _summary_of(await self.ask({"digests": digests}))

    async def bucket(self, model: str, index: int, buckets: int, *, at: int) -> dict[str, str]:
        request = {"bucket": {"model": model, "index": index, "buckets": buckets}}
        return dict((await self._ask_at(request, at))["keys"])

    async def rows(self, model: str, keys: Sequence[str], *, at: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pending = list(keys)
        while pending:
            asked, pending = pending[:MAX_KEYS_PER_REQUEST], pending[MAX_KEYS_PER_REQUEST:]
            data = await self._ask_at({"rows": {"model": model, "keys": asked}}, at)
            out.update(data["rows"])
            pending = list(data.get("left") or []) + pending
        plain: dict[str, Any] = _plain(out)
        return plain

    async def everything(self, model: str, *, at: int) -> dict[str, Any]:
        """Every row of a model, page by page."""
        out: dict[str, Any] = {}
        after: str | None = None
        while True:
            data = await self._ask_at({"page": {"model": model, "after": after}}, at)
            out.update(data["rows"])
            after = data.get("next")
            if after is None:
                plain: dict[str, Any] = _plain(out)
                return plain


class MemorySource(Source):
    """Models already at hand (a LiveModel) asked as a service would be."""

    def __init__(self, live: LiveModel) -> None:
        self.live = live
        self.service = live.service

    async def summary(self) -> Summary:
        models = {}
        for name, rows in self.live.models.items():
            buckets = bucket_count(len(rows))
            models[name] = ModelDigests(len(rows), buckets, bucket_digests(keyed(rows), buckets))
        return Summary(
            self.live.position, models, self.live.skipped, self.live.skipped_recent, self.live.retention_s
        )

    async def bucket(self, model: str, index: int, buckets: int, *, at: int) -> dict[str, str]:
        return key_digests(keyed(self.live.models[model]), index, buckets)

    async def rows(self, model: str, keys: Sequence[str], *, at: int) -> dict[str, Any]:
        rows, _missing, _left = page_rows(keyed(self.live.models[model]), keys, budget=1 << 62)
        return rows


def registry_source(nc: NATS, timeout: float = 5.0) -> LiveSource:
    return LiveSource(nc, LIST_HOSTS, "registry", timeout)


def allocator_source(nc: NATS, timeout: float = 5.0) -> LiveSource:
    return LiveSource(nc, ALLOCATOR_STATE, "allocator", timeout)


def _live(source: LiveSource, summary: Summary, models: dict[str, Any]) -> LiveModel:
    return LiveModel(
        source.service, summary.position, models, summary.skipped, summary.skipped_recent, summary.retention_s
    )


async def _fetch(source: LiveSource, models: bool) -> LiveModel:
    """The service's models whole (each at one position), or only what it skipped (`models=False`)."""
    for _ in range(ATTEMPTS):
        summary = await source.summary(digests=False)
        if not models:
            return LiveModel(
                source.service,
                summary.position,
                {},
                summary.skipped,
                summary.skipped_recent,
                summary.retention_s,
            )
        try:
            whole = {name: await source.everything(name, at=summary.position) for name in summary.models}
        except Moved:
            await asyncio.sleep(0.1)
            continue
        return LiveModel(
            source.service,
            summary.position,
            whole,
            summary.skipped,
            summary.skipped_recent,
            summary.retention_s,
        )
    raise LiveUnavailable(
        f"the {source.service} kept moving while its models were read ({ATTEMPTS} tries); "
        "try again when the pool is quieter"
    )


async def fetch_registry(nc: NATS, timeout: float = 5.0, *, models: bool = True) -> LiveModel:
    return await _fetch(registry_source(nc, timeout), models)


async def fetch_allocator(nc: NATS, timeout: float = 5.0, *, models: bool = True) -> LiveModel:
    return await _fetch(allocator_source(nc, timeout), models)


def _plain(value: Any) -> Any:
    """Through JSON and back, as a reply travels: the form both sides are compared in."""
    return json.loads(json.dumps(value))
