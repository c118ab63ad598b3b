"""Idempotency-Key's pure rules (services/allocator/idempotency.py)."""

import re
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.decisions import requested
from potluck.allocator.idempotency import (
    earlier_extension,
    extension_metadata,
    keyed_alloc_id,
    keyed_job_id,
    parse_key,
    replayed,
    replayed_job,
)
from potluck.allocator.job_schemas import CreateJob
from potluck.allocator.schemas import CreateAllocation
from potluck.allocator.stored import ALLOC_ID
from potluck.events import RecordedEvent
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.jobs import JobState

BODY = {"cpus": 1, "memory": "64M", "disk": "64M", "image": "busybox", "command": ["true"]}


def _state(user: str, alloc_id: str, body: dict[str, object]) -> AllocationState:
    request = requested(user, alloc_id, CreateAllocation.model_validate(body))
    return AllocationState(
        alloc_id=alloc_id,
        user=user,
        spec=request.spec,
        lifetime_s=request.lifetime_s,
        queue_timeout_s=request.queue_timeout_s,
        constraints=request.constraints,
    )


def test_keys_are_taken_as_sent_or_quoted_and_refused_otherwise() -> None:
    """Must hold: no header is no key; a bare or structured-field-quoted key is the key; an
    empty one, one with a space or a control character, one of 256 characters, and two headers
    are 400 INVALID_FIELD naming Idempotency-Key."""
    assert parse_key([]) is None
    assert parse_key(["3f1c-x_y.z:1"]) == "3f1c-x_y.z:1"
    assert parse_key(['"3f1c"']) == "3f1c"
    for bad in ([""], ['""'], ["a b"], ["a\x01"], ["k" * 256], ["one", "two"]):
        with pytest.raises(Rejected) as refused:
            parse_key(bad)
        assert (refused.value.status, refused.value.field) == (400, "Idempotency-Key"), bad


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_a_keys_id_is_an_allocation_id_of_its_user_alone(user: str, other: str, key: str) -> None:
    """Must hold: the id has the form of every allocation id, is the same for the same user and
    key, and another user's same key (or the user's other key) names another id."""
    alloc_id = keyed_alloc_id(user, key)
    assert ALLOC_ID.fullmatch(alloc_id)
    assert keyed_alloc_id(user, key) == alloc_id
    if other != user:
        assert keyed_alloc_id(other, key) != alloc_id
    assert keyed_alloc_id(user, key + "x") != alloc_id
    # A job's id the same way, in the form of every job id (new_job_id), never the allocation's.
    job_id = keyed_job_id(user, key)
    assert re.fullmatch(r"j-[0-9a-f]{12}", job_id)
    assert keyed_job_id(user, key) == job_id
    assert job_id[2:] != alloc_id[2:]
    if other != user:
        assert keyed_job_id(other, key) != job_id


def test_the_same_request_is_answered_with_the_allocation_and_another_is_refused() -> None:
    """Must hold: the request the allocation was made from gets it back; another image, more
    memory or another lifetime is 422 IDEMPOTENCY_KEY_REUSED naming the allocation; an
    allocation of another user (an id collision) is 409 IDEMPOTENCY_KEY_IN_USE."""
    state = _state("alice", "a-000000000001", BODY)
    same = requested("alice", "a-000000000001", CreateAllocation.model_validate(BODY))
    assert replayed(state, same) is state
    for change in ({"image": "other"}, {"memory": "128M"}, {"lifetime": 60}):
        other = requested("alice", "a-000000000001", CreateAllocation.model_validate({**BODY, **change}))
        with pytest.raises(Rejected) as refused:
            replayed(state, other)
        assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED"), change
        assert "a-000000000001" in refused.value.message
    bobs = requested("bob", "a-000000000001", CreateAllocation.model_validate(BODY))
    with pytest.raises(Rejected) as refused:
        replayed(state, bobs)
    assert (refused.value.status, refused.value.code) == (409, "IDEMPOTENCY_KEY_IN_USE")


def test_the_same_job_is_answered_with_the_job_and_another_is_refused() -> None:
    """Must hold: the job's own spec gets the job back; more tasks, another command or more
    memory is 422 IDEMPOTENCY_KEY_REUSED naming the job; another user's job (an id collision)
    is 409 IDEMPOTENCY_KEY_IN_USE."""
    body = {"tasks": 3, "cpus": 0.5, "memory": "64M", "disk": "64M", "image": "img", "command": ["true"]}
    spec = CreateJob.model_validate(body).spec()
    job = JobState(job_id="j-000000000001", user="alice", spec=spec, submitted_at=datetime.now(UTC))
    assert replayed_job(job, "alice", spec) is job
    for change in ({"tasks": 4}, {"command": ["false"]}, {"memory": "128M"}):
        other = CreateJob.model_validate({**body, **change}).spec()
        with pytest.raises(Rejected) as refused:
            replayed_job(job, "alice", other)
        assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED"), change
        assert "j-000000000001" in refused.value.message
    with pytest.raises(Rejected) as refused:
        replayed_job(job, "bob", spec)
    assert (refused.value.status, refused.value.code) == (409, "IDEMPOTENCY_KEY_IN_USE")


def _logged(version: int, type_name: str, metadata: dict[str, object]) -> RecordedEvent:
    stream, at = "allocation-a-000000000001", datetime.now(UTC)
    return RecordedEvent(version, uuid4(), stream, version, type_name, 1, "{}", metadata, at)


def test_an_extension_is_found_by_its_key_alone_and_another_by_is_refused() -> None:
    """Must hold: the AllocationExtended whose metadata holds the key is found (not one with
    another key, nor one without, nor another type that carries the key); the same key asking
    another `by` is 422 IDEMPOTENCY_KEY_REUSED; no key in the stream is None."""
    keyed = _logged(4, "AllocationExtended", {"actor": "user:alice", **extension_metadata("k-1", 600)})
    stream = [
        _logged(1, "AllocationRequested", {"actor": "user:alice", "idempotency_key": "k-1"}),
        _logged(2, "AllocationExtended", {"actor": "user:alice"}),
        _logged(3, "AllocationExtended", extension_metadata("k-2", 600)),
        keyed,
    ]
    assert earlier_extension(stream, "k-1", 600) is keyed
    assert earlier_extension(stream, "k-3", 600) is None
    assert earlier_extension([], "k-1", 600) is None
    with pytest.raises(Rejected) as refused:
        earlier_extension(stream, "k-1", 1200)
    assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")
