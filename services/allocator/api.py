"""The allocator's HTTP API for users (aiohttp), versioned under /v1.

Errors are JSON `{"error": {"code", "message", "field"}}`, mapped in one
middleware: 400 malformed, 401 no or wrong token, 403 quota (or a user's cap of jobs not
finished), 404 not found
(also for another user's allocation: its existence is not disclosed), 405
with `Allow`, 408 a body that took too long to arrive (request_bodies.py), 409 conflict,
415 not JSON (or not UTF-8), 422 impossible, 429 too many failed
authentications from one address (authentication.py), too many long polls of one user's
waiting (long_polls.py), a user's changes past their rate or fetches (reads of the log or
the pool registry) past theirs (user_rates.py), 503 not ready yet, or the event log's database
away (log_outages.py: LOG_UNAVAILABLE, nothing done; OUTCOME_UNKNOWN, a change that may have
been made), with `Retry-After`.
Every query parameter is checked whether or not another makes it matter; none may be given
twice (but the registry token endpoint's `scope`): a second value would go unread; and one the
endpoint does not take (per the OpenAPI document) is refused, not ignored.
"""

import codecs
import json
import math
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import nullcontext
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from potluck.allocator import idempotency
from potluck.allocator.authentication import CATCH_UP_S, Authenticator, FailureWindow, LogUnreadable, as_given
from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.http_headers import add_common_headers
from potluck.allocator.job_schemas import CreateJob, Job, JobList, JobTaskList
from potluck.allocator.log_outages import LOG_OUTAGE_RETRY_AFTER_S, log_outage
from potluck.allocator.log_readiness import LogReadiness
from potluck.allocator.long_polls import TooManyWaits, WaitSlots, parse_timeout, while_connected
from potluck.allocator.openapi import openapi_document
from potluck.allocator.paging import page_query, task_page_query
from potluck.allocator.pool_registry import PoolRegistry
from potluck.allocator.registry_auth import POOL_REGISTRY, basic_password, pool_registry
from potluck.allocator.registry_auth import token as registry_token_for
from potluck.allocator.request_bodies import BODY_READ, BODY_READ_S, MAX_BODY, continue_if_it_fits, within
from potluck.allocator.schemas import (
    Allocation,
    AllocationList,
    CreateAllocation,
    Error,
    ErrorBody,
    ExtendAllocation,
    History,
    PoolImage,
    PoolImages,
)
from potluck.allocator.task_standing import TASK_STATES, TaskState
from potluck.allocator.user_rates import USER_RATES, RateExceeded, UserRates
from potluck.allocator.users import User
from potluck.allocator.web import is_api, is_page, stray
from potluck.allocator.web import setup as setup_pages
from potluck.allocator.web.log_tail import LogSource
from potluck.allocator.web.origins import Site
from potluck.contracts.registry import TOKEN_PATH
from potluck.events import database_away
from potluck.kernel.client_address import client_of
from potluck.kernel.key_rates import RatePolicy
from potluck.kernel.rejections import Rejected, error_text, new_incident
from potluck.readmodels.allocations import TERMINAL, AllocationState
from potluck.readmodels.jobs import JobState

log = structlog.get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ENGINE: web.AppKey[AllocatorEngine] = web.AppKey("engine", AllocatorEngine)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
WAITS: web.AppKey[WaitSlots] = web.AppKey("waits", WaitSlots)
LOG_READINESS: web.AppKey[LogReadiness] = web.AppKey("log_readiness", LogReadiness)
#: Who the request's bearer token is (auth_middleware). A typed key: a plain string one makes
#: aiohttp warn, and the first request of a process whose warnings are errors failed with 500.
USER: web.RequestKey[User] = web.RequestKey("user", User)
# The registry's token endpoint authenticates with HTTP Basic itself (Docker clients' way).
PUBLIC = frozenset({"/healthz", "/readyz", "/v1/openapi.json", TOKEN_PATH})
STATES = frozenset({"pending", "placed", "pulling", "running", *TERMINAL})
#: A job's tasks' states, by name (`?state=` of a job's tasks).
TASK_STATE: dict[str, TaskState] = {state: state for state in TASK_STATES}
#: Query parameters a request may repeat: Docker clients ask the token endpoint for one
#: `scope` per repository.
REPEATABLE = frozenset({"scope"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = ErrorBody(error=Error(code=code, message=message, field=field))
    return web.json_response(body.model_dump(exclude_none=True), status=status)


def ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def _log_unavailable(request: web.Request, method: str, exc: BaseException) -> web.Response:
    outage = log_outage(method, exc)
    assert outage is not None, "the database away is an outage of the log"
    log.warning(
        "api.log_unavailable", method=request.method, path=request.path, code=outage.code, error=repr(exc)
    )
    response = error(outage.status, outage.code, outage.message)
    response.headers["Retry-After"] = str(outage.retry_after_s)
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (TooManyWaits, RateExceeded) as exc:
        response = error(exc.status, exc.code, exc.message)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except Rejected as exc:
        return error(exc.status, exc.code, exc.message, exc.field)
    except LogUnreadable as exc:
        # Reading the log to know who holds a token changes nothing, whatever the method.
        return _log_unavailable(request, "GET", exc.cause)
    except web.HTTPException as exc:
        # A page's address is repeated nowhere: a link's author wrote it, needing no token
        # (`/web/Your session expired, sign in at evil.example`), and the answer would say
        # it in Potluck's name. An API path is repeated to the bearer client that sent it.
        where = "this page's address" if is_page(request.path) else request.path
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            response = error(
                405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {where}; use {allowed}"
            )
            response.headers["Allow"] = allowed
            return response
        if exc.status == 404:
            if is_page(request.path):
                return error(404, "NOT_FOUND", "no such page: the pool's pages start at /")
            return error(404, "NOT_FOUND", f"no such endpoint: {request.path[:200]}")
        if exc.status == 413:
            return error(413, "BODY_TOO_LARGE", f"the body is larger than {MAX_BODY // 1024} KiB")
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # The client closed its connection mid-request (its body cut off): no bug, and no
            # one reads an answer, which aiohttp drops quietly.
            log.info("api.client_gone", method=request.method, path=request.path, error=repr(exc))
            return error(400, "CLIENT_GONE", "the connection closed before the request was read")
        if database_away(exc):  # not any OSError: one of the allocator's own is a bug to see
            return _log_unavailable(request, request.method, exc)
        # The id lets the user's report find the operator's log line; the detail stays there.
        incident = new_incident()
        log.exception("api.unhandled", method=request.method, path=request.path, incident=incident)
        said = f"the allocator failed; the operator's log has the detail under incident {incident}"
        return error(500, "INTERNAL", said)


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a query parameter the endpoint does not take (`?stat=running` would list every
    allocation, the typo unnoticed) or one given twice (`?state=running&state=x` would show the
    running ones, and the `x` look checked): handlers read one value of what the OpenAPI
    document declares. The pages read theirs themselves; the registry's token endpoint takes
    what Docker clients send."""
    if not is_page(request.path):
        known = _query_names(request)
        seen: set[str] = set()
        for name, _ in request.query.items():  # every value (iterating names gives each once)
            if known is not None and name not in known:
                takes = ", ".join(sorted(known)) or "none"
                raise Rejected.invalid_field(
                    name, f"{name} is not a query parameter of this endpoint (it takes: {takes})"
                )
            if name in seen and name not in REPEATABLE:
                raise Rejected.invalid_field(name, f"{name} is given more than once; give it once")
            seen.add(name)
    return await handler(request)


def _query_names(request: web.Request) -> frozenset[str] | None:
    """The query parameters the OpenAPI document declares for the request's route and method;
    None for a route it does not describe."""
    resource = request.match_info.route.resource
    return None if resource is None else _declared_query(resource.canonical, request.method.lower())


@cache
def _declared_query(path: str, method: str) -> frozenset[str] | None:
    # Read from the document once per operation, not per request: every request asks.
    operation = openapi_document()["paths"].get(path, {}).get(method)
    if not isinstance(operation, dict):
        return None
    return frozenset(p["name"] for p in operation.get("parameters", []) if p.get("in") == "query")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_page(request.path) or request.path in PUBLIC - {TOKEN_PATH}:  # pages: sessions
        return await handler(request)
    if not is_api(request.path):  # `/history`: a page's address without /web/, or nothing's
        answer = await stray(request)
        if answer.status == 404 and "Authorization" in request.headers:
            # An API client at a wrong base URL (`potluck login --url .../somewhere`): the API's
            # JSON, whose NOT_FOUND tells it no API is there.
            return error(404, "NOT_FOUND", answer.text or "")
        return answer
    if len(request.headers.getall("Authorization", ())) > 1:
        # The first would be read here, where a proxy in front may have checked or logged the
        # last: one request, two identities (as a JSON name or a query parameter given twice).
        return error(401, "UNAUTHENTICATED", "send one Authorization header, not several")
    if request.path == TOKEN_PATH:  # the registry's token endpoint reads its Basic credentials
        return await handler(request)
    token = _bearer_token(request)
    if not token:
        return error(
            401,
            "UNAUTHENTICATED",
            "send 'Authorization: Bearer <token>'; an operator gives tokens with `potluck ops users add`",
        )
    user = await _token_user(request, token)
    if isinstance(user, web.Response):
        return user
    if user is None:
        gone = request.app[AUTH].users.removed_holder(token)
        if gone is not None:
            # Its own code: no new login mends it (clients tell the user to ask the operator).
            return error(
                401,
                "USER_REMOVED",
                f"user {gone.name} was removed by the pool's operator; this token no longer works",
            )
        return error(401, "UNAUTHENTICATED", "this token is not valid; ask an operator for a new one")
    request[USER] = user
    return await handler(request)


def _bearer_token(request: web.Request) -> str:
    """The token of the request's `Authorization: Bearer` header, as given; "" without one."""
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return as_given(sent) if scheme.lower() == "bearer" else ""


async def _continue_if_known(request: web.Request) -> web.StreamResponse | None:
    """The API's answer to `Expect: 100-continue`: the body is invited only from a caller whose
    token the allocator knows, and only if it fits (continue_if_it_fits, which refuses one
    announced too large at once, whoever sends it). Any other caller gets no `100 Continue`:
    auth_middleware answers it before any of its body is read (401).

    A token given out a moment ago, not folded yet, is known after the shared catch-up with the
    log, which is waited for here (from an address not locked out): without it, such a client
    sent its body only once it stopped waiting for an invitation (curl: after a second). Nothing
    is counted here; the middleware counts a token nobody holds once."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return await continue_if_it_fits(request)  # refused at once, whoever asks
    token = _bearer_token(request)
    auth = request.app[AUTH]
    known = bool(token) and auth.known(token) is not None
    if token and not known and auth.locked(client_of(request.remote)) is None:
        known = await auth.known_once_caught_up(token) is not None
    return await continue_if_it_fits(request) if known else None


async def _token_user(request: web.Request, token: str) -> User | web.Response | None:
    """Who `token` is ("" is no one): a good token works from a locked-out address too
    (authentication.py says why: else one script looping on an old token locks out everyone
    behind its address); else the 429 while the address is locked out, or None (a failure of
    the address, counted, when a token was given)."""
    user = request.app[AUTH].known(token) if token else None
    if user is not None:
        return user
    locked = _locked_out(request)
    if locked is not None:
        return locked
    return await request.app[AUTH].authenticate(client_of(request.remote), token) if token else None


def _locked_out(request: web.Request) -> web.Response | None:
    """429 while the request's address has failed to authenticate too often, else None."""
    source = client_of(request.remote)
    locked = request.app[AUTH].locked(source)
    if locked is None:
        return None
    retry_after = math.ceil(locked.retry_after_s)
    response = error(
        429,
        "TOO_MANY_FAILURES",
        f"too many failed authentications from {source}; try again in {retry_after}s",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


async def _json(request: web.Request) -> Any:
    if request.content_type not in ("application/json", ""):
        raise Rejected("UNSUPPORTED_MEDIA_TYPE", "send the body as application/json", status=415)
    if not _utf8(request.charset):
        raise Rejected(
            "UNSUPPORTED_MEDIA_TYPE",
            f"charset {request.charset!r} is not one this API reads; send the body as UTF-8 JSON",
            status=415,
        )
    try:
        return await within(request.json(loads=_loads), request.app[BODY_READ])
    except _UnreadableBody as exc:  # the field that holds it named, as the schema's refusals do
        raise Rejected(
            "MALFORMED_JSON", f"the body is not valid JSON: {exc}", field=exc.field, status=400
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError
        raise Rejected("MALFORMED_JSON", f"the body is not valid JSON: {exc}", status=400) from None
    except RecursionError:
        raise Rejected(
            "MALFORMED_JSON", "the body is not valid JSON: nested too deeply", status=400
        ) from None


def _utf8(charset: str | None) -> bool:
    """Whether a body of this charset is UTF-8, the only encoding JSON has between systems (RFC
    8259, 8.1). Any other codec Python has would be read too (cp500, utf-7: a body a proxy or an
    audit sees as harmless bytes means another request here), and one it has not would fail."""
    if charset is None:
        return True
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


class _Unreadable:
    """What the parser's hooks leave where a value cannot be read as written (a number a float
    cannot hold, NaN, an object naming a field twice): `_readable` then finds it, and says which
    field holds it. Raised from the hook instead, the refusal could name no field."""

    __slots__ = ("name", "reason")

    def __init__(self, reason: str, name: str | None = None) -> None:
        self.reason = reason
        #: The name the refusal is about, inside the value (a field given twice).
        self.name = name


class _UnreadableBody(ValueError):
    def __init__(self, reason: str, field: str | None) -> None:
        super().__init__(reason)
        self.field = field


def _no_constant(name: str) -> Any:
    return _Unreadable(f"{name} is not a JSON number")


def _loads(text: str) -> Any:
    # Python's parser takes NaN and Infinity, which JSON has not, and \ud800-style escapes of
    # lone surrogates, which encode as no UTF-8 (RFC 7493 forbids them; Postgres refuses them).
    # RFC 7493 also forbids a name twice in one object: Python keeps the last, where another
    # reader (a proxy, an audit) may have checked the first.
    body = json.loads(
        text,
        parse_constant=_no_constant,
        parse_int=_bounded_int,
        parse_float=_float_as_written,
        object_pairs_hook=_unique,
    )
    _readable(body, [])
    return body


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Unreadable:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                return _Unreadable(f"{name[:40]!r} is given more than once in one object; give it once", name)
            seen.add(name)
    return obj


def _bounded_int(text: str) -> int | _Unreadable:
    # Past Python's limit on digits (4,300) `int` fails with advice on an interpreter setting,
    # which is not the client's to change; shorter ones reach the schema, which names the field.
    try:
        return int(text)
    except ValueError:
        return _Unreadable(f"a number of {len(text.lstrip('-'))} digits is more than this API reads")


def _float_as_written(text: str) -> float | int | _Unreadable:
    # A float holds nothing nearer 0 than about 5e-324: 1e-400 became 0.0, which a `queue_timeout`
    # or a `keep_for` takes, where the schema (0, or at least 1) refuses 1e-400. No field takes
    # a number that small, so one is refused as such rather than read as another number.
    value = float(text)
    # Past a float's largest (about 1.8e308) it is infinity, which a field's bound then refused as
    # "less than or equal to 256": not the number written. Said as NaN is (_no_constant).
    if math.isinf(value):
        return _Unreadable(f"{text[:40]} is larger than any number this API reads")
    if value == 0 and any(digit in "123456789" for digit in text.partition("e")[0].partition("E")[0]):
        return _Unreadable(
            f"{text[:40]} is nearer 0 than a number this API reads; write 0, or a larger number"
        )
    # Nor does a float hold 3.0000000000000000001: it became 3.0, which a whole-number field
    # (`tasks`, `retries`, `parallelism`) takes as 3, so a job of "3 and a bit" tasks was one of
    # 3. A number read as a whole number must be that number as written (3.0, 1e1 and 1e4 are).
    if math.isfinite(value) and value.is_integer() and (exact := Decimal(text)) != int(value):
        # A whole number past what a float holds exactly (1e308) is that whole number, as 1 and
        # 308 zeros written out is: each field's own bound then names the field and what it takes.
        if exact == exact.to_integral_value():
            return int(exact)
        return _Unreadable(
            f"{text[:40]} cannot be read exactly (it would be read as {value:.17g}); "
            "write the number you mean with fewer digits"
        )
    return value


def _readable(value: Any, path: list[str | int]) -> None:
    """Raise _UnreadableBody for the first value the hooks could not read, or the first string
    with a lone surrogate, naming the body's field that holds it and where in it."""
    reason = None
    if isinstance(value, _Unreadable):
        reason = value.reason
        if value.name is not None:
            path = [*path, value.name]
    elif isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                reason = f"a string holds a lone surrogate: {value[:20]!r}"
    elif isinstance(value, dict):
        for key, item in value.items():
            _readable(key, path)  # a name with a lone surrogate: the object holding it is named
            _readable(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _readable(item, [*path, index])
    if reason is not None:
        where = ".".join(str(step)[:40] for step in path)
        field = path[0] if path and isinstance(path[0], str) else None  # a body's field: a name
        raise _UnreadableBody(f"{where}: {reason}" if where else reason, field)


def _shown(request: web.Request, state: AllocationState) -> Allocation:
    """The allocation as its user sees it, with its host's condition, or, pending, why it waits."""
    engine = request.app[ENGINE]
    host = engine.hosts.hosts.get(state.host_id) if state.host_id else None
    return Allocation.of(state, host, engine.standing(state))


def _user(request: web.Request) -> User:
    return request[USER]


def _changing(request: web.Request) -> None:
    """Count the request as one of its caller's changes: refused (429) past their rate
    (user_rates.py) before its body is read or anything is decided."""
    request.app[USER_RATES].admit(_user(request).name)


async def _body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`; a body that is not one is the client's 400, named by
    its first wrong field. Only here: a ValidationError anywhere else is the allocator's own
    (a response it could not build), answered 500 as any other bug, not blamed on the client."""
    data = await _json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or None
        # `field` names the body's field (ssh_keys, not ssh_keys.2); the message the exact place.
        field = str(first["loc"][0]) if first["loc"] else None
        message = f"{path or 'body'}: {error_text(first)}"
        raise Rejected("INVALID_FIELD", message, field=field, status=400) from None


async def create(request: web.Request) -> web.Response:
    _changing(request)
    body = await _body(request, CreateAllocation)
    registry = request.app.get(POOL_REGISTRY)
    if registry is not None:
        registry.check_image(_user(request).name, body.image)
    key = idempotency.parse_key(request.headers.getall(idempotency.HEADER, []))
    made = await request.app[ENGINE].request_allocation(_user(request), body, idempotency_key=key)
    response = ok(_shown(request, made.state), 201 if made.state.status != "pending" else 202)
    if made.replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


async def listing(request: web.Request) -> web.Response:
    wanted = request.query.get("state")
    if wanted is not None and wanted not in STATES:
        raise Rejected.invalid_field("state", f"state must be one of {sorted(STATES)}")
    user = _user(request).name
    engine = request.app[ENGINE]
    model = engine.model
    # A cursor naming one of the user's the model has let go since (retention.py) still has its
    # place in the order: the page goes on from there.
    gone = await engine.stored_cursor(_user(request), request.query.get("after"))
    page = page_query(
        request.query, lambda a: gone is not None or model.allocations.by_user.owns(user, a), "allocations"
    )
    found, following = model.allocations_page(user, wanted, page.after, page.limit, after_stored=gone)
    return ok(AllocationList(allocations=[_shown(request, a) for a in found], next=following))


def _timeout(request: web.Request) -> float:
    return parse_timeout(request.query.get("timeout", "30"))


async def _long_poll(
    request: web.Request, timeout: float, wait: Callable[[], Coroutine[Any, Any, T]]
) -> T | None:
    """What `wait()` gives, holding the user's slot for a long poll meanwhile (none for a timeout
    of 0, which does not wait); None when the client went away or the allocator is stopping
    (long_polls.while_connected). `wait` is made only once the slot is taken: a refused one
    leaves no coroutine behind."""
    slots = request.app[WAITS]
    with slots.held(_user(request).name) if timeout > 0 else nullcontext():
        return await while_connected(request, wait(), slots.stopping)


async def show(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    alloc_id = request.match_info["alloc_id"]
    wanted = request.query.get("wait")
    timeout = _timeout(request)  # checked even without `wait`: the schema bounds it either way
    if wanted is not None:
        if wanted not in STATES:
            raise Rejected.invalid_field("wait", f"wait must be one of {sorted(STATES)}")
        waited = await _long_poll(
            request, timeout, lambda: engine.wait_for(_user(request), alloc_id, wanted, timeout)
        )
        # None: the client went away (what is answered, the state now, reaches no one) or the
        # allocator is stopping (the client asks again).
        state = waited if waited is not None else await engine.allocation_of(_user(request), alloc_id)
    else:
        state = await engine.allocation_of(_user(request), alloc_id)
    return ok(_shown(request, state))


async def release(request: web.Request) -> web.Response:
    _changing(request)
    state = await request.app[ENGINE].release(_user(request), request.match_info["alloc_id"])
    return ok(_shown(request, state))


async def extend(request: web.Request) -> web.Response:
    _changing(request)
    body = await _body(request, ExtendAllocation)
    key = idempotency.parse_key(request.headers.getall(idempotency.HEADER, []))
    alloc_id = request.match_info["alloc_id"]
    made = await request.app[ENGINE].extend(_user(request), alloc_id, body.by, idempotency_key=key)
    response = ok(_shown(request, made.state))
    if made.replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


async def history(request: web.Request) -> web.Response:
    alloc_id = request.match_info["alloc_id"]
    entries = await request.app[ENGINE].history(_user(request), alloc_id)
    return ok(History(allocation_id=alloc_id, events=entries))


def _job(request: web.Request, job: JobState, *, first_tasks: bool = False) -> Job:
    """The job with its tasks counted, and with `first_tasks` the first page of them."""
    model = request.app[ENGINE].model
    return Job.shown(
        job, model.job_tallies, model.allocations.allocations, model.hosts.hosts, first_tasks=first_tasks
    )


async def create_job(request: web.Request) -> web.Response:
    _changing(request)
    body = await _body(request, CreateJob)
    registry = request.app.get(POOL_REGISTRY)
    if registry is not None:
        registry.check_image(_user(request).name, body.image)
    key = idempotency.parse_key(request.headers.getall(idempotency.HEADER, []))
    made = await request.app[ENGINE].submit_job(_user(request), body, idempotency_key=key)
    response = ok(_job(request, made.job), 201)
    if made.replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


async def list_jobs(request: web.Request) -> web.Response:
    user = _user(request).name
    model = request.app[ENGINE].model
    page = page_query(request.query, lambda j: model.jobs.by_user.owns(user, j), "jobs")
    jobs, following = model.jobs_page(user, page.after, page.limit)
    return ok(JobList(jobs=[_job(request, job) for job in jobs], next=following))


async def show_job(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    job_id = request.match_info["job_id"]
    wanted = request.query.get("wait")
    timeout = _timeout(request)  # checked even without `wait`, as for allocations
    if wanted is not None:
        if wanted != "done":
            raise Rejected.invalid_field("wait", "wait must be 'done'")
        waited = await _long_poll(
            request, timeout, lambda: engine.wait_for_job(_user(request), job_id, timeout)
        )
        job = waited if waited is not None else engine.job_of(_user(request), job_id)
    else:
        job = engine.job_of(_user(request), job_id)
    return ok(_job(request, job, first_tasks=True))


async def list_job_tasks(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    wanted = request.query.get("state")
    if wanted is not None and wanted not in TASK_STATE:
        raise Rejected.invalid_field("state", f"state must be one of {list(TASK_STATES)}")
    job = engine.job_of(_user(request), request.match_info["job_id"])
    page = task_page_query(request.query, job.spec.tasks)
    state = TASK_STATE[wanted] if wanted is not None else None
    model = engine.model
    tasks = JobTaskList.page(
        job,
        model.job_tallies,
        model.allocations.allocations,
        model.hosts.hosts,
        page.after,
        page.limit,
        state,
    )
    return ok(tasks)


async def cancel_job(request: web.Request) -> web.Response:
    _changing(request)
    job = await request.app[ENGINE].cancel_job(_user(request), request.match_info["job_id"])
    return ok(_job(request, job))


async def pool(request: web.Request) -> web.Response:
    return ok(request.app[ENGINE].pool())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if not request.app[ENGINE].ready.is_set():
        return error(503, "NOT_READY", "the allocator is still loading the event log")
    if not await request.app[LOG_READINESS].answers():
        response = error(
            503,
            "LOG_UNAVAILABLE",
            "the pool's event log (its database) does not answer: "
            "requests would wait for it or fail; see its server",
        )
        response.headers["Retry-After"] = str(LOG_OUTAGE_RETRY_AFTER_S)
        return response
    return web.json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def registry_token(request: web.Request) -> web.Response:
    """Docker's token request: the same failure limit per address as every other route, a good
    token working from a locked-out address as there (`_token_user`)."""
    user = await _token_user(request, basic_password(request) or "")
    if isinstance(user, web.Response):
        return user
    return await registry_token_for(request, user)


async def images(request: web.Request) -> web.Response:
    registry = pool_registry(request)
    user = _user(request)
    request.app[ENGINE].fetches.admit(user.name)  # a request to the registry per repository
    repositories = await registry.repositories_of(user.name)
    library = await registry.library()
    return ok(
        PoolImages(
            registry=registry.address,
            prefix=registry.reference_prefix(user.name),
            images=[PoolImage(name=f"{registry.address}/{r.name}", tags=r.tags) for r in repositories],
            library=[PoolImage(name=r.name, tags=r.tags) for r in library],
        )
    )


async def _end_waits(app: web.Application) -> None:
    app[WAITS].stop()
    app[LOG_READINESS].close()


def make_app(
    engine: AllocatorEngine,
    failures: FailureWindow | None = None,
    *,
    registry: PoolRegistry | None = None,
    logs: LogSource | None = None,
    site: Site | None = None,
    change_rate: RatePolicy | None = None,
    body_read_s: float = BODY_READ_S,
) -> web.Application:
    """The API and the pages; `change_rate`: each user's (user_rates.py), its default when None;
    `body_read_s`: how long a request's body may take to arrive (request_bodies.py)."""
    app = web.Application(
        middlewares=[errors_middleware, query_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[ENGINE] = engine
    app[LOG_READINESS] = LogReadiness(engine.store.log_clock)
    app[BODY_READ] = body_read_s
    app[WAITS] = WaitSlots()
    app.on_shutdown.append(_end_waits)
    app[USER_RATES] = UserRates(change_rate) if change_rate is not None else UserRates()
    app[AUTH] = Authenticator(
        engine.users,
        lambda: engine.fold.caught_up_with(engine.store, timeout=CATCH_UP_S),
        failures=failures,
    )
    if registry is not None:
        app[POOL_REGISTRY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_post("/v1/allocations", create, expect_handler=_continue_if_known)
    app.router.add_get("/v1/allocations", listing)
    app.router.add_get("/v1/allocations/{alloc_id}", show)
    app.router.add_delete("/v1/allocations/{alloc_id}", release)
    app.router.add_post("/v1/allocations/{alloc_id}/extend", extend, expect_handler=_continue_if_known)
    app.router.add_get("/v1/allocations/{alloc_id}/events", history)
    app.router.add_post("/v1/jobs", create_job, expect_handler=_continue_if_known)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", show_job)
    app.router.add_get("/v1/jobs/{job_id}/tasks", list_job_tasks)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
    app.router.add_get("/v1/pool", pool)
    app.router.add_get(TOKEN_PATH, registry_token)
    app.router.add_get("/v1/images", images)
    app.on_response_prepare.append(_api_headers)
    setup_pages(app, engine, app[AUTH], logs, site)
    return app


async def _api_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Answers hold a user's allocations and tokens (the registry's): http_headers.py says
    # which headers keep them out of caches, frames and other types; pages set theirs (routes.py).
    if not is_page(request.path):
        add_common_headers(response)
