"""/v1/openapi.json, assembled from the pydantic models the handlers use, so it cannot drift."""

from functools import cache
from typing import Any, get_args

from pydantic.json_schema import models_json_schema

from potluck.allocator.job_decisions import MAX_UNFINISHED_JOBS
from potluck.allocator.job_schemas import CreateJob, Job, JobList, JobTaskList
from potluck.allocator.long_polls import MAX_WAITS_PER_USER, TIMEOUT_SCHEMA
from potluck.allocator.paging import DEFAULT_LIMIT, MAX_LIMIT
from potluck.allocator.request_bodies import BODY_READ_S
from potluck.allocator.schemas import (
    Allocation,
    AllocationList,
    CreateAllocation,
    ErrorBody,
    ExtendAllocation,
    History,
    Pool,
    PoolImages,
)
from potluck.allocator.task_standing import TASK_STATES
from potluck.allocator.user_rates import DEFAULT_CHANGE_RATE, DEFAULT_FETCH_RATE
from potluck.contracts.job_events import MAX_TASKS
from potluck.kernel.version import __version__
from potluck.readmodels.allocations import AllocationStatus

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


def _idempotency_key(made: str, *, extension: bool = False) -> dict[str, Any]:
    """The `Idempotency-Key` header of a request that makes `made`, or extends it (idempotency.py)."""
    answered = (
        f"with the {made} as it is, extended by the first request only (header "
        "`Idempotent-Replayed: true`), never twice"
        if extension
        else f"with the {made} the first one made (header `Idempotent-Replayed: true`), never a second one"
    )
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Your own id for this request (a UUID): sent again with the same key, as "
        f"after a lost answer or a 503 OUTCOME_UNKNOWN, the request is answered {answered}; the "
        "same key with another request is a 422 IDEMPOTENCY_KEY_REUSED, one whose first request is "
        "still being decided a 409 IDEMPOTENCY_KEY_IN_USE",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:~+/=-]{1,255}$"},
    }


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request",
        401: "Missing or wrong token (UNAUTHENTICATED), or the token of a user the pool's operator "
        "removed (USER_REMOVED)",
        403: "Quota exceeded (QUOTA_EXCEEDED), too many jobs not finished (TOO_MANY_JOBS), or an "
        "image in another user's namespace of the pool registry",
        404: "No such allocation or job (or not yours), or no image registry in this pool",
        408: f"The body did not arrive within {BODY_READ_S:g} s",
        409: "Conflict (on a create: IDEMPOTENCY_KEY_IN_USE, the key's first request is still being decided)",
        413: "Body larger than 256 KiB",
        415: "Not JSON",
        422: "Impossible request: more than any host could ever give, INVALID_SSH_KEY (a key line "
        "that holds no whole key, or one too weak to log in with), or IDEMPOTENCY_KEY_REUSED (the "
        "Idempotency-Key was sent with another request)",
        429: "Too many failed authentications from this address, or (a request with `wait`) "
        f"{MAX_WAITS_PER_USER} of the user's waiting already; see Retry-After",
        503: "Not ready, the pool changes too fast to decide, or its database is away: try again "
        "(LOG_UNAVAILABLE), or look first (OUTCOME_UNKNOWN: the change may have been made)",
    }
    return {str(c): {"description": text[c], **_json("ErrorBody")} for c in codes}


def _authenticated(*codes: int, changes: bool = False, fetches: bool = False) -> dict[str, Any]:
    """The errors of an operation that needs a token: 401 and 429 (authentication.py) too; with
    `changes`, one of the user's changes, whose 429 is also their rate (user_rates.py); with
    `fetches`, one that may read the log or the pool registry, whose 429 is also the user's
    rate of those."""
    responses = _errors(*sorted({401, 429, *codes}))
    retry_after = {
        "description": "Whole seconds until the request may be tried again",
        "schema": {"type": "integer", "minimum": 1},
    }
    responses["429"] = {**responses["429"], "headers": {"Retry-After": retry_after}}
    if changes:
        responses["429"]["description"] = (
            "Too many failed authentications from this address (TOO_MANY_FAILURES), or the "
            f"user's changes past their rate (RATE_LIMITED: by default {DEFAULT_CHANGE_RATE.burst:g} "
            f"at once, then {DEFAULT_CHANGE_RATE.per_s:g} a second, counting every create, extend, "
            "release and cancel of allocations and jobs; the pool's operator may set another). "
            "Nothing was done: try again after Retry-After"
        )
    if fetches:
        responses["429"]["description"] += (
            ". Also RATE_LIMITED: the user's reads of allocations the allocator no longer holds "
            "in memory (ended long ago, or never made), of allocations' events and of their images "
            "past their rate "
            f"(by default {DEFAULT_FETCH_RATE.burst:g} at once, then {DEFAULT_FETCH_RATE.per_s:g} "
            "a second); nothing was read: try again after Retry-After"
        )
    return responses


#: `?timeout=` of a long poll, in seconds.
_TIMEOUT = (
    "Seconds to wait (default 30): 0 answers at once; otherwise at least 0.001, written without "
    "a sign (not -0)"
)
_ID = {"name": "alloc_id", "in": "path", "required": True, "schema": {"type": "string"}}
#: What a created allocation's id leads to (OpenAPI links: clients, and fuzzers' stateful runs, follow them).
_LINKS = {
    name: {"operationId": operation, "parameters": {"alloc_id": "$response.body#/id"}}
    for name, operation in (
        ("GetAllocation", "getAllocation"),
        ("ReleaseAllocation", "releaseAllocation"),
        ("ExtendAllocation", "extendAllocation"),
        ("AllocationHistory", "allocationHistory"),
    )
}
_STATE = {"type": "string", "enum": list(get_args(AllocationStatus))}


#: `?limit=&after=` of the lists (paging.py): the same for allocations and jobs.
_PAGE = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Rows per page",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "The previous page's `next`: this page starts after that row (404 if it is not yours)",
        "schema": {"type": "string"},
    },
]


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (
        ("GetJob", "getJob"),
        ("ListJobTasks", "listJobTasks"),
        ("CancelJob", "cancelJob"),
    )
}
#: `?limit=&after=&state=` of a job's tasks (paging.py): `after` is a task's index.
_TASK_PAGE = [
    _PAGE[0],
    {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "The previous page's `next` (or the job's `task_list_next`): this page starts "
        "after that task (404 if the job has no task of that index)",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TASKS - 1},
    },
    {
        "name": "state",
        "in": "query",
        "required": False,
        "description": "Only the tasks in this state",
        "schema": {"type": "string", "enum": list(TASK_STATES)},
    },
]


@cache
def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in (CreateAllocation, ExtendAllocation, CreateJob)]
        + [
            (m, "serialization")
            for m in (
                Allocation,
                AllocationList,
                History,
                Pool,
                PoolImages,
                Job,
                JobList,
                JobTaskList,
                ErrorBody,
            )
        ],
        ref_template=_REF,
    )
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Potluck allocator",
            "version": __version__,
            "description": "Ask the pool for capacity; get a container with exactly those limits.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/allocations": {
                "post": {
                    "operationId": "createAllocation",
                    "security": auth,
                    "parameters": [_idempotency_key("allocation")],
                    "requestBody": {"required": True, **_json("CreateAllocation")},
                    "responses": {
                        "201": {"description": "Placed", **_json("Allocation"), "links": _LINKS},
                        "202": {
                            "description": "Pending: waits for capacity",
                            **_json("Allocation"),
                            "links": _LINKS,
                        },
                        **_authenticated(400, 403, 408, 409, 413, 415, 422, 503, changes=True),
                    },
                },
                "get": {
                    "operationId": "listAllocations",
                    "security": auth,
                    "parameters": [
                        {"name": "state", "in": "query", "required": False, "schema": _STATE},
                        *_PAGE,
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of the caller's allocations, oldest request first: "
                            "every one not ended, and those ended within the allocator's retention "
                            "window (--retention, 24 h by default) on the log's clock. One ended "
                            "before that is no longer listed (GET /v1/allocations/{alloc_id} still "
                            "answers for it); a cursor naming it still goes on from its place",
                            **_json("AllocationList"),
                        },
                        **_authenticated(400, 404, fetches=True),
                    },
                },
            },
            "/v1/allocations/{alloc_id}": {
                "get": {
                    "operationId": "getAllocation",
                    "security": auth,
                    "parameters": [
                        _ID,
                        {"name": "wait", "in": "query", "required": False, "schema": _STATE},
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "description": _TIMEOUT,
                            "schema": TIMEOUT_SCHEMA,
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The allocation; one ended before the retention window "
                            "is read from its own stream in the log and answers as it did",
                            **_json("Allocation"),
                        },
                        **_authenticated(400, 404, fetches=True),
                    },
                },
                "delete": {
                    "operationId": "releaseAllocation",
                    "security": auth,
                    "parameters": [_ID],
                    "responses": {
                        "200": {"description": "Released", **_json("Allocation")},
                        **_authenticated(404, 503, changes=True, fetches=True),
                    },
                },
            },
            "/v1/allocations/{alloc_id}/extend": {
                "post": {
                    "operationId": "extendAllocation",
                    "security": auth,
                    "parameters": [_ID, _idempotency_key("allocation", extension=True)],
                    "requestBody": {"required": True, **_json("ExtendAllocation")},
                    "responses": {
                        "200": {"description": "Extended", **_json("Allocation")},
                        **_authenticated(400, 404, 408, 409, 413, 415, 422, 503, changes=True, fetches=True),
                    },
                },
            },
            "/v1/allocations/{alloc_id}/events": {
                "get": {
                    "operationId": "allocationHistory",
                    "security": auth,
                    "parameters": [_ID],
                    "responses": {
                        "200": {"description": "The allocation's events", **_json("History")},
                        **_authenticated(404, fetches=True),
                    },
                },
            },
            "/v1/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Run many tasks: each an allocation of the same spec, with its index",
                    "security": auth,
                    "parameters": [_idempotency_key("job")],
                    "requestBody": {"required": True, **_json("CreateJob")},
                    "description": "Answers the job's summary: its tasks counted by state, without "
                    "the tasks themselves (GET /v1/jobs/{job_id}/tasks pages through them). At most "
                    f"{MAX_UNFINISHED_JOBS} jobs of a user may be not finished at once: past that, "
                    "403 TOO_MANY_JOBS.",
                    "responses": {
                        "201": {
                            "description": "Submitted: its tasks are requested as quota and pool allow",
                            **_json("Job"),
                            "links": _JOB_LINKS,
                        },
                        **_authenticated(400, 403, 408, 409, 413, 415, 422, 503, changes=True),
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "security": auth,
                    "parameters": _PAGE,
                    "responses": {
                        "200": {
                            "description": "A page of the caller's jobs, oldest first, without their "
                            "tasks: every one not ended, and those ended within the allocator's "
                            "retention window (--retention, 24 h by default)",
                            **_json("JobList"),
                        },
                        **_authenticated(400, 404),
                    },
                },
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "operationId": "getJob",
                    "security": auth,
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": "`done`: answer once the job has ended (or after `timeout`)",
                            "schema": {"type": "string", "enum": ["done"]},
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "description": _TIMEOUT,
                            "schema": TIMEOUT_SCHEMA,
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The job, its tasks counted by state, and its first 100 "
                            "tasks (`task_list`; the rest from GET /v1/jobs/{job_id}/tasks "
                            "?after=`task_list_next`). A job ended before the allocator's retention "
                            "window answers 404 here; each of its attempts still answers at "
                            "GET /v1/allocations/{alloc_id}",
                            **_json("Job"),
                        },
                        **_authenticated(400, 404),
                    },
                },
                "delete": {
                    "operationId": "cancelJob",
                    "security": auth,
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": {
                            "description": "Cancelled; what it ran is released. The job's summary, "
                            "without its tasks",
                            **_json("Job"),
                        },
                        **_authenticated(404, 503, changes=True),
                    },
                },
            },
            "/v1/jobs/{job_id}/tasks": {
                "get": {
                    "operationId": "listJobTasks",
                    "security": auth,
                    "parameters": [_JOB_ID, *_TASK_PAGE],
                    "responses": {
                        "200": {
                            "description": "A page of the job's tasks (in `state`, when given), by index",
                            **_json("JobTaskList"),
                        },
                        **_authenticated(400, 404),
                    },
                },
            },
            "/v1/pool": {
                "get": {
                    "operationId": "getPool",
                    "security": auth,
                    "responses": {
                        "200": {"description": "Hosts and capacity", **_json("Pool")},
                        **_authenticated(),
                    },
                },
            },
            "/v1/images": {
                "get": {
                    "operationId": "listImages",
                    "security": auth,
                    "responses": {
                        "200": {
                            "description": "Your images in the pool registry, and the pool's own",
                            **_json("PoolImages"),
                        },
                        **_authenticated(404, 409, 503, fetches=True),
                    },
                },
            },
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {"200": {"description": "Ready"}, **_errors(503)},
                }
            },
        },
    }
