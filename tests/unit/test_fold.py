"""The one fold of the log (Fold) and the one retry policy (decide_and_append), without servers.

What is tried: records of every kind a reader meets (folded categories, other
categories, unknown types, malformed data, records seen twice) and attempts
that lose to other writers. What must hold: the projection sees exactly the
readable events of its categories in log order, an unreadable one is counted
and remembered and folding goes on past it, and a conflict is retried after a
refresh until it succeeds or the policy gives up with Contended.
"""

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import HostEnrolled
from potluck.events import (
    Contended,
    Event,
    Fold,
    RecordedEvent,
    RetryPolicy,
    WrongExpectedVersion,
    decide_and_append,
    projection,
)
from tests.helpers import capture_module_log


class Recorder:
    """A projection that remembers what it was given."""

    categories = frozenset({"host"})

    def __init__(self) -> None:
        self.seen: list[tuple[int, Event]] = []

    def apply(self, event: Event, record: RecordedEvent) -> None:
        self.seen.append((record.position, event))


def record(
    position: int, *, stream: str = "host-h1", type_name: str = "HostEnrolled", data: object = None
) -> RecordedEvent:
    if data is None:
        data = {"host_id": "h1", "name": "laptop", "nkey": "UABC"}
    return RecordedEvent(
        position, uuid4(), stream, position, type_name, 1, json.dumps(data), {}, datetime.now(UTC)
    )


def test_events_of_the_categories_are_folded_in_order_and_the_rest_only_advance() -> None:
    projection = Recorder()
    fold = Fold(projection, reader="test")
    fold.apply_all([record(1), record(2, stream="alloc-a1", type_name="Whatever"), record(3)])
    assert [p for p, _ in projection.seen] == [1, 3]
    assert all(isinstance(e, HostEnrolled) for _, e in projection.seen)
    assert fold.position == 3
    assert fold.skipped.count == 0


def test_a_record_at_or_below_the_position_is_not_folded_twice() -> None:
    projection = Recorder()
    fold = Fold(projection, reader="test")
    fold.apply_all([record(1), record(2)])
    fold.apply_all([record(2), record(1)])
    assert [p for p, _ in projection.seen] == [1, 2]


@pytest.mark.parametrize(
    ("type_name", "data", "error"),
    [
        ("HostTeleported", {"host_id": "h1"}, "HostTeleported"),  # a newer writer's type
        ("HostEnrolled", {"host_id": "h1"}, "name"),  # data this version cannot read
        ("HostEnrolled", [1, 2], "JSON object"),
    ],
)
def test_an_unreadable_event_is_counted_remembered_and_folding_goes_on(
    type_name: str, data: object, error: str
) -> None:
    projection = Recorder()
    fold = Fold(projection, reader="test")
    fold.apply_all([record(1), record(2, type_name=type_name, data=data), record(3)])
    assert [p for p, _ in projection.seen] == [1, 3]
    assert fold.position == 3
    assert fold.skipped.count == 1
    (skipped,) = fold.skipped.recent
    assert (skipped.position, skipped.stream, skipped.type) == (2, "host-h1", type_name)
    assert error in skipped.error
    assert fold.skipped.as_dict()["count"] == 1


@pytest.mark.parametrize("log_skipped", [True, False])
def test_an_unreadable_event_is_logged_unless_the_reader_shows_it_itself(
    log_skipped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is tried: a fold meets an event it cannot decode, told to log what it skips or not (the
    ops tools list every skipped event in their answer). What must hold: it is counted and
    remembered either way; one error line names it only when the fold logs them."""
    fold = Fold(Recorder(), reader="test", log_skipped=log_skipped)
    capture = capture_module_log(projection, monkeypatch)
    fold.apply_all([record(1, type_name="HostTeleported", data={})])
    assert fold.skipped.count == 1
    logged = [e["event"] for e in capture.entries]
    assert logged == (["events.skipped_unreadable"] if log_skipped else [])


def test_an_unreadable_event_of_a_category_nobody_folds_is_not_even_decoded() -> None:
    fold = Fold(Recorder(), reader="test")
    fold.apply(record(1, stream="session-s1", type_name="NoSuchType"))
    assert fold.skipped.count == 0
    assert fold.position == 1


class VersionCounter(Recorder):
    """Tracks each stream's version, as a projection that decides with expected versions must."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, int] = {}

    def apply(self, event: Event, record: RecordedEvent) -> None:
        super().apply(event, record)
        self.versions[record.stream] = record.version

    def passed_over(self, record: RecordedEvent) -> None:
        self.versions[record.stream] = record.version


def test_a_skipped_event_still_moves_its_streams_version_for_a_versioned_projection() -> None:
    projection = VersionCounter()
    fold = Fold(projection, reader="test")
    fold.apply_all([record(1), record(2, type_name="HostTeleported")])
    assert [p for p, _ in projection.seen] == [1]
    assert projection.versions == {"host-h1": 2}


def test_skipped_events_remembered_are_bounded_but_all_are_counted() -> None:
    fold = Fold(Recorder(), reader="test", keep_skipped=3)
    fold.apply_all(record(p, type_name="HostTeleported") for p in range(1, 11))
    assert fold.skipped.count == 10
    assert [s.position for s in fold.skipped.recent] == [8, 9, 10]


@given(st.lists(st.sampled_from(["ok", "other", "unknown", "malformed"]), max_size=40))
def test_the_same_records_give_the_same_folded_events(kinds: list[str]) -> None:
    """Determinism: folding a log twice gives the same events at the same positions."""
    records = []
    for position, kind in enumerate(kinds, start=1):
        if kind == "ok":
            records.append(record(position))
        elif kind == "other":
            records.append(record(position, stream="alloc-x", type_name="X"))
        elif kind == "unknown":
            records.append(record(position, type_name="HostTeleported"))
        else:
            records.append(record(position, data={"host_id": 5}))
    first, second = Recorder(), Recorder()
    Fold(first, reader="a").apply_all(records)
    fold = Fold(second, reader="b")
    fold.apply_all(records)
    assert first.seen == second.seen
    assert len(first.seen) == kinds.count("ok")
    assert fold.skipped.count == kinds.count("unknown") + kinds.count("malformed")
    assert fold.position == len(kinds)


def conflict() -> WrongExpectedVersion:
    return WrongExpectedVersion("host-h1", 3, 4)


async def test_a_lost_race_is_decided_again_after_a_refresh() -> None:
    calls: list[str] = []

    async def attempt() -> str:
        calls.append("attempt")
        if calls.count("attempt") < 3:
            raise conflict()
        return "appended"

    async def refresh() -> None:
        calls.append("refresh")

    result = await decide_and_append(attempt, before_retry=refresh, policy=RetryPolicy(max_jitter_s=0))
    assert result == "appended"
    assert calls == ["attempt", "refresh", "attempt", "refresh", "attempt"]


async def test_endless_conflicts_end_in_contended_after_the_policy_attempts() -> None:
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        raise conflict()

    with pytest.raises(Contended) as info:
        await decide_and_append(attempt, policy=RetryPolicy(attempts=4, max_jitter_s=0))
    assert attempts == 4
    assert info.value.attempts == 4
    assert info.value.conflict.stream == "host-h1"


async def test_other_errors_are_not_retried() -> None:
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("a bug, not a race")

    with pytest.raises(ValueError, match="a bug"):
        await decide_and_append(attempt)
    assert attempts == 1
