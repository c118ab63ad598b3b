"""`Idempotency-Key` on POST /v1/allocations and POST /v1/jobs: a request sent again is one
allocation, or one job. Pure.

A create that meets the log's database lost while it is recorded (log_outages.py's
OUTCOME_UNKNOWN), an allocator killed under it, or a connection cut before the answer came
back, leaves the client not knowing whether its allocation was made; sent again blindly it
could be made twice, each held against the user's quota and a member's machine. With the
header (as Stripe's API and the IETF's draft-ietf-httpapi-idempotency-key-header have it) the
allocation's id is derived from the user and the key, so the log itself decides: the first
request appends the id's stream at version 0, and any later one with the same key finds it
there (or loses the append to it) and is answered with that allocation, marked
`Idempotent-Replayed: true`, never a second one. Nothing is kept besides the log: a key is
never forgotten, even after its allocation has ended and left the allocator's memory.

The same key with a different request is refused (422 IDEMPOTENCY_KEY_REUSED) rather than
answered with an allocation that is not what was asked; one whose first request is still
being decided is a 409 IDEMPOTENCY_KEY_IN_USE (look again in a moment). A key is the user's
own: another user's same key names another allocation.

A job is keyed the same way (`keyed_job_id`, `replayed_job`): a job of a thousand tasks sent
twice would run every task twice.

An extension (POST /v1/allocations/ID/extend) makes no new stream to key, and sent twice it
pushes the expiry out twice. Its key goes into the metadata of the `AllocationExtended` it
records (the request's context, as the actor is; the event's shape, which hostd reads too,
stays as it is). A keyed extension first looks for that key in the allocation's stream
(`earlier_extension`); the append's expected version on the stream makes two requests with one
key at once one extension: the second loses the append, looks again, and finds the first.
A key names one extension of one allocation.
"""

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from potluck.contracts.allocation_events import AllocationExtended, AllocationRequested
from potluck.contracts.job_events import JobSpec
from potluck.events import RecordedEvent
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.jobs import JobState

__all__ = [
    "HEADER",
    "REPLAYED_HEADER",
    "earlier_extension",
    "extension_metadata",
    "in_flight",
    "keyed_alloc_id",
    "keyed_job_id",
    "parse_key",
    "replayed",
    "replayed_job",
]

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: A UUID, a ULID, a hash, a job runner's "run-41:step-3": what clients send, and nothing that
#: would need escaping where the key is shown back.
_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]{1,255}")


def parse_key(values: list[str]) -> str | None:
    """The request's key (its `Idempotency-Key` headers' values), None when it sent none. A
    structured-field string (`"..."`, as the IETF draft writes it) is taken without its quotes."""
    if not values:
        return None
    if len(values) > 1:
        raise Rejected.invalid_field(HEADER, f"send one {HEADER} header, not {len(values)}")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not _KEY.fullmatch(key):
        raise Rejected.invalid_field(
            HEADER,
            f"{HEADER} must be 1 to 255 letters, digits or ._:~+/=- (a UUID is a good one)",
        )
    return key


def keyed_alloc_id(user: str, key: str) -> str:
    """The allocation id `user`'s `key` names: `a-` and 12 hex digits, as every id (new_alloc_id)."""
    digest = hashlib.sha256(f"potluck-allocation\0{user}\0{key}".encode()).hexdigest()
    return f"a-{digest[:12]}"


def keyed_job_id(user: str, key: str) -> str:
    """The job id `user`'s `key` names: `j-` and 12 hex digits, as every id (new_job_id)."""
    digest = hashlib.sha256(f"potluck-job\0{user}\0{key}".encode()).hexdigest()
    return f"j-{digest[:12]}"


def replayed(state: AllocationState, request: AllocationRequested) -> AllocationState:
    """`state`, the allocation an earlier request with the same key made, as the answer to
    `request`: refused when it is another user's (an id collision: 48 bits) or another request."""
    asked = (request.spec, request.lifetime_s, request.constraints, request.queue_timeout_s)
    made = (state.spec, state.lifetime_s, state.constraints, state.queue_timeout_s)
    _same_request(state.user == request.user, asked == made, f"allocation {state.alloc_id}")
    return state


def replayed_job(job: JobState, user: str, spec: JobSpec) -> JobState:
    """`job`, the job an earlier request with the same key made, as the answer to `user`'s
    request for `spec`: refused when it is another user's or another request."""
    _same_request(job.user == user, job.spec == spec, f"job {job.job_id}")
    return job


#: Where a keyed extension's key and what it asked for are kept in its event's metadata.
_EXTENSION_KEY = "idempotency_key"
_EXTENSION_BY = "extend_by_s"


def extension_metadata(key: str, by_s: float) -> dict[str, Any]:
    """The metadata of the `AllocationExtended` that a request with `key` asking `by_s` records."""
    return {_EXTENSION_KEY: key, _EXTENSION_BY: by_s}


def earlier_extension(records: Iterable[RecordedEvent], key: str, by_s: float) -> RecordedEvent | None:
    """The extension an earlier request with `key` recorded among `records` (the allocation's
    stream), None when none did; refused when that request asked for another `by_s`."""
    for record in records:
        if record.type == AllocationExtended.type_name and record.metadata.get(_EXTENSION_KEY) == key:
            asked = record.metadata.get(_EXTENSION_BY)
            _same_request(True, asked == by_s, f"an extension by {asked} s")
            return record
    return None


def in_flight() -> Rejected:
    """The refusal of a request whose key's first request is still being decided."""
    return Rejected(
        "IDEMPOTENCY_KEY_IN_USE",
        f"a request with this {HEADER} is being decided; look again in a moment",
        status=409,
    )


def _same_request(same_user: bool, same_request: bool, made: str) -> None:
    if not same_user:
        raise Rejected("IDEMPOTENCY_KEY_IN_USE", f"send another {HEADER}: this one is in use", status=409)
    if not same_request:
        raise Rejected(
            "IDEMPOTENCY_KEY_REUSED",
            f"this {HEADER} was sent with another request, which made {made}; "
            "send a new key for a new request",
            field=HEADER,
            status=422,
        )
