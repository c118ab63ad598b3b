"""The pool as the log had it: folded up to a moment, and sampled over a day for the plots. Pure.

Both fold the records they are given with the allocator's own model (the same
`Fold` and projections the engine follows the log with), so a past page is
exactly what the live one showed then; the caller reads the records, and may
feed them a batch at a time (`Until`, `Sampler`: past.py does, to keep the
event loop free between batches).
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from potluck.allocator.model import AllocatorModel
from potluck.allocator.web.views import Amount, pool_totals
from potluck.events import Fold, RecordedEvent
from potluck.kernel.digits import is_digits
from potluck.readmodels.retention import DEFAULT_RETENTION_S, Retirement

__all__ = ["Moment", "Plot", "Sample", "Sampler", "Until", "fold_until", "parse_at", "plot", "samples"]

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Moment:
    """A point of the log: a position, or a time (everything recorded up to it)."""

    position: int | None = None
    at: datetime | None = None

    def includes(self, record: RecordedEvent) -> bool:
        if self.position is not None:
            return record.position <= self.position
        return self.at is None or record.recorded_at <= self.at


#: A Postgres bigint's digits: no log position has more.
POSITION_DIGITS = 19
#: What a refused `?at=` may look like for the page to repeat it: a digit, then the characters of
#: ISO times, whose only letters are T and Z (no word can be spelled).
SHOWN_AT = re.compile(r"[0-9][0-9TZ:.+-]{0,39}")


def parse_at(raw: str) -> Moment:
    """`?at=`: a log position (digits) or an ISO time (UTC when it names no zone); ValueError else."""
    raw = raw.strip()
    if is_digits(raw):
        # A log position is a bigint; past Python's digit limit `int` would ask for an
        # interpreter setting, which is not the reader's to change.
        if len(raw.lstrip("0")) > POSITION_DIGITS:
            raise ValueError(f"at={raw[:40]}... is past any log position ({POSITION_DIGITS} digits at most)")
        return Moment(position=int(raw))
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        # Repeated only when shaped like a time: a link cannot make the page say a sentence of
        # its own ("at='session expired, sign in at ...'"), as for ids (routes.SHOWN_ID).
        shown = f"at={raw!r}" if SHOWN_AT.fullmatch(raw) else "this at="
        raise ValueError(
            f"{shown} is neither a log position nor an ISO time (e.g. 2026-11-30T12:00:00Z)"
        ) from None
    return Moment(at=at if at.tzinfo is not None else at.replace(tzinfo=UTC))


def _fold(retention_s: float = DEFAULT_RETENTION_S) -> tuple[AllocatorModel, Fold]:
    model = AllocatorModel(retirement=Retirement(retention_s=retention_s))
    return model, Fold(model, reader="web-history")


class Until:
    """Folds the records up to `moment`, fed a batch at a time in log order (so that a caller
    can read the log piecewise and let others run between batches)."""

    def __init__(self, moment: Moment, retention_s: float = DEFAULT_RETENTION_S) -> None:
        """`retention_s`: the allocator's own window (retention.py), to show what it held then."""
        self.moment = moment
        self.model, self._fold = _fold(retention_s)

    @property
    def position(self) -> int:
        return self._fold.position

    def feed(self, records: Iterable[RecordedEvent]) -> bool:
        """Fold `records`; False once a record lies past the moment (nothing further is needed)."""
        for record in records:
            if not self.moment.includes(record):
                return False
            self._fold.apply(record)
        return True


def fold_until(records: Iterable[RecordedEvent], moment: Moment) -> tuple[AllocatorModel, int]:
    """The model and its position once every record up to `moment` (in log order) is folded."""
    until = Until(moment)
    until.feed(records)
    return until.model, until.position


@dataclass(frozen=True)
class Sample:
    at: datetime
    donated: Amount
    reserved: Amount


class Sampler:
    """The pool's totals (of the hosts in `only`, when given) at `points` evenly spaced times over
    `span` up to `end`, fed the log a batch at a time in log order."""

    def __init__(
        self, end: datetime, points: int = 96, span: timedelta = DAY, only: frozenset[str] | None = None
    ) -> None:
        # Counted back from `end`, so that the last sample is at `end` exactly.
        self._times: Iterator[datetime] = (
            end - span * (points - 1 - i) / (points - 1) for i in range(points)
        )
        self.only = only
        self.model, self._fold = _fold()
        self._out: list[Sample] = []
        self._t = next(self._times, None)

    def feed(self, records: Iterable[RecordedEvent]) -> bool:
        """Fold `records`, sampling as time passes; False once every sample is taken."""
        for record in records:
            while self._t is not None and record.recorded_at > self._t:
                self._take()
            if self._t is None:
                return False
            self._fold.apply(record)
        return self._t is not None

    def series(self) -> list[Sample]:
        """The samples, those after the last record fed taken as the model stands."""
        while self._t is not None:
            self._take()
        return self._out

    def _take(self) -> None:
        """The sample due now, as the model stands; on to the next time."""
        assert self._t is not None
        self._out.append(Sample(self._t, *pool_totals(self.model, self.only)))
        self._t = next(self._times, None)


def samples(
    records: Iterable[RecordedEvent],
    end: datetime,
    points: int = 96,
    span: timedelta = DAY,
    only: frozenset[str] | None = None,
) -> list[Sample]:
    """The pool's totals (of the hosts in `only`, when given) at `points` evenly spaced times
    over `span` up to `end`."""
    sampler = Sampler(end, points, span, only)
    sampler.feed(records)
    return sampler.series()


@dataclass(frozen=True)
class Plot:
    """One resource over time as SVG polylines (in a 0..width x 0..height box, y down)."""

    title: str
    unit: str
    top: str
    donated: str
    reserved: str
    start: str
    end: str
    width: int = 600
    height: int = 160


def plot(series: list[Sample], resource: str, *, width: int = 600, height: int = 160) -> Plot:
    """`resource` ("cpus" or "memory") of `series` as two lines: donated and reserved."""
    gib = resource == "memory"

    def value(a: Amount) -> float:
        return a.memory / (1 << 30) if gib else a.cpus

    top = max([value(s.donated) for s in series] + [value(s.reserved) for s in series] + [1.0])
    n = max(len(series) - 1, 1)

    def line(pick: str) -> str:
        return " ".join(
            f"{i * width / n:.1f},{height - value(getattr(s, pick)) * height / top:.1f}"
            for i, s in enumerate(series)
        )

    return Plot(
        title="CPU" if not gib else "memory",
        unit="GiB" if gib else "cores",
        top=f"{top:g}" if not gib else f"{top:.1f}",
        donated=line("donated"),
        reserved=line("reserved"),
        start=series[0].at.strftime("%Y-%m-%d %H:%M") if series else "",
        end=series[-1].at.strftime("%Y-%m-%d %H:%M UTC") if series else "",
        width=width,
        height=height,
    )
