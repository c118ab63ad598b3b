"""The pages' handlers: the pool (now, or `?at=` a past moment), the day's history, sign-in, a
user's allocations and jobs, one allocation, and a member's machine.

Every page but sign-in needs a session (sessions.py): a user's sees their own
allocations (another user's answers 404, exactly as one that does not exist),
an operator's sees every user's and changes none, a member's sees only their
hosts. GETs change
nothing; every POST carries the session's CSRF token (sign-in, which has no
session yet, is held to the same origin instead: it must name it, `_from_a_page`) and answers
with a redirect,
so that reloading a page never posts twice.
"""

import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from potluck.allocator.authentication import Authenticator, LogUnreadable, as_given
from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.http_headers import HSTS, add_common_headers
from potluck.allocator.log_outages import LOG_OUTAGE_RETRY_AFTER_S
from potluck.allocator.request_bodies import BODY_READ, continue_if_it_fits, within
from potluck.allocator.schemas import HistoryEntry
from potluck.allocator.stored import ALLOC_ID, stored_allocation
from potluck.allocator.user_rates import USER_RATES, RateExceeded
from potluck.allocator.users import User
from potluck.allocator.web import history, views
from potluck.allocator.web.connect import plain_ssh_line
from potluck.allocator.web.job_page import job_view
from potluck.allocator.web.live import Changes, StreamsFull, StreamSlots, TooManyStreams, stream
from potluck.allocator.web.log_tail import LogSource, Whereabouts, follow_log
from potluck.allocator.web.mine_page import mine_of
from potluck.allocator.web.origins import Site
from potluck.allocator.web.past import BUSY_RETRY_S, Busy, PastFolds
from potluck.allocator.web.sessions import Session, Sessions, SessionsFull
from potluck.allocator.web.trace import trace_of
from potluck.contracts.allocation_events import alloc_stream
from potluck.kernel.client_address import client_of
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState

__all__ = ["PREFIX", "is_page", "setup"]

log = structlog.get_logger(__name__)

PREFIX = "/web/"
HERE = Path(__file__).parent
ENGINE: web.AppKey[AllocatorEngine] = web.AppKey("web_engine", AllocatorEngine)
SESSIONS: web.AppKey[Sessions] = web.AppKey("web_sessions", Sessions)
CHANGES: web.AppKey[Changes] = web.AppKey("web_changes", Changes)
STREAMS: web.AppKey[StreamSlots] = web.AppKey("web_streams", StreamSlots)
PAST: web.AppKey[PastFolds] = web.AppKey("web_past", PastFolds)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("web_authenticator", Authenticator)
#: How the pages reach hosts for a container's log; None: they cannot (an app without the bus).
LOGS: web.AppKey[LogSource | None] = web.AppKey("web_logs")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: No inline script or style, nothing from elsewhere, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The name an operator's session shows: no user can be called that (users.USER_NAME).
OPERATOR = "(operator)"
EXTEND_CHOICES = {"1h": 3600.0, "4h": 4 * 3600.0, "24h": 24 * 3600.0}
#: What an allocation's page says after a refused extend or release, by the refusal's code. The
#: redirect carries only the code and the page shows only its own words for it (an unknown
#: code, none): a link cannot make Potluck's page say anything else, e.g. a phishing line.
ACTION_ERRORS = {
    "ALREADY_ENDED": "This allocation has ended: it can no longer be extended or released.",
    "INVALID_FIELD": f"Extend by one of {', '.join(EXTEND_CHOICES)}.",
    "BUSY": "The pool is changing too fast to decide now; try again.",
    "NOT_FOUND": "This allocation is no longer yours to change.",
    "RATE_LIMITED": "You are making changes faster than this pool allows; nothing was done. "
    "Try again in a few seconds.",
    # Any refusal without words of its own here; the allocator's log has its detail.
    "REFUSED": "That could not be done now; `potluck alloc show` says where the allocation stands.",
}
#: The names of the address's parameters the pages read (`?at=` of the pool, `?error=` of an
#: allocation) and of the fields their forms send: the only ones a refusal repeats (_given_twice).
QUERY_NAMES = frozenset({"at", "error"})
FORM_NAMES = frozenset({"token", "csrf", "by"})
#: When a sign-in refused for want of room (sessions.MAX_SESSIONS) says to try again: sessions
#: end as users sign out and expire, not at any moment the allocator could name.
SESSIONS_FULL_RETRY_S = 60
#: When a live stream refused past its bound (live.MAX_STREAMS_PER_SESSION) says to try again:
#: as soon as another page of the user's is closed.
STREAMS_RETRY_S = 5
#: When one refused past everybody's bound (live.MAX_STREAMS) says to: as others' pages close.
STREAMS_FULL_RETRY_S = 60


def is_page(path: str) -> bool:
    """Whether the API's bearer-token check leaves this path to the pages' own sessions."""
    return path == "/" or path.startswith(PREFIX)


def setup(
    app: web.Application,
    engine: AllocatorEngine,
    authenticator: Authenticator,
    logs: LogSource | None = None,
    site: Site | None = None,
) -> None:
    """Add the pages to the allocator's app; they follow the engine's own fold, ask hosts
    for containers' logs through `logs`, and answer under the names `site` allows."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    changes = Changes()
    engine.fold.after_batch.append(changes.folded)
    app[ENGINE] = engine
    app[SESSIONS] = Sessions(site=site)
    app[CHANGES] = changes
    app[STREAMS] = StreamSlots()
    app[PAST] = PastFolds(engine.store, retention_s=engine.retention_s)
    app[AUTHENTICATOR] = authenticator
    app[LOGS] = logs
    app.middlewares.append(_known_host)
    app.on_response_prepare.append(_security_headers)
    app.on_response_prepare.append(_transport_security)
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", pool_page)
    app.router.add_get(PREFIX + "live/pool", pool_live)
    app.router.add_get(PREFIX + "history", history_page)
    app.router.add_get(PREFIX + "machine", machine_page)
    app.router.add_get(PREFIX + "live/machine", machine_live)
    app.router.add_get(PREFIX + "signin", signin_form)
    app.router.add_post(PREFIX + "signin", signin, expect_handler=continue_if_it_fits)
    app.router.add_post(PREFIX + "signout", signout, expect_handler=continue_if_it_fits)
    app.router.add_get(PREFIX + "mine", mine_page)
    app.router.add_get(PREFIX + "live/mine", mine_live)
    app.router.add_get(PREFIX + "allocations/{alloc_id}", allocation_page)
    app.router.add_get(PREFIX + "jobs/{job_id}", job_page)
    app.router.add_get(PREFIX + "live/allocations/{alloc_id}", allocation_live)
    app.router.add_get(PREFIX + "live/allocations/{alloc_id}/log", allocation_log)
    app.router.add_post(PREFIX + "allocations/{alloc_id}/extend", extend, expect_handler=continue_if_it_fits)
    app.router.add_post(
        PREFIX + "allocations/{alloc_id}/release", release, expect_handler=continue_if_it_fits
    )
    app.router.add_get(PREFIX + "static/{name}", static_file)


#: The pages' static files by name, listed once: a request names one of these or gets the pages'
#: 404. aiohttp's `add_static` answered a name it had no file for with an empty 404 typed
#: application/octet-stream (its file response finds the file missing only as it is sent, where
#: no middleware can answer for it) and a folder with a bare 403, and it resolved whatever path
#: the request spelled against the disk.
STATIC = {path.name: path for path in (HERE / "static").iterdir() if path.is_file()}


async def static_file(request: web.Request) -> web.StreamResponse:
    path = STATIC.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


async def _close_streams(app: web.Application) -> None:
    app[CHANGES].close()


#: What a page answers a request naming a Host it does not serve (origins.py, DNS rebinding).
UNKNOWN_HOST = (
    "this pool's pages are not served under the name {host!r}: open them at the address "
    "`potluck up` printed, or ask the operator to start the allocator with "
    "--public-url (POTLUCK_ALLOCATOR_PUBLIC_URL) naming it"
)


@web.middleware
async def _known_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer pages only under an IP address, localhost or a configured name: another name is
    a page of another site whose name points at this machine (origins.py). 421 is HTTP's
    "not the server for this name". The API is left alone: it reads a bearer token, which no
    page of another site holds, and clients reach it under any name."""
    if is_page(request.path) and not request.app[SESSIONS].site.host_allowed(request):
        log.info("web.unknown_host_refused", host=request.host[:100], path=request.path[:200])
        return web.Response(status=421, text=UNKNOWN_HOST.format(host=request.host[:100]))
    twice = _given_twice(request.query, QUERY_NAMES, "a parameter") if is_page(request.path) else None
    if twice is not None:
        # As the API refuses it (api.query_middleware): `/?at=1&at=2` showed position 1, and
        # whatever looked at the link may have read 2.
        return web.Response(status=400, text=f"{twice} is given more than once in the address; give it once")
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if is_page(request.path):
        response.headers["Content-Security-Policy"] = CSP
        add_common_headers(response, CSP)


async def _transport_security(request: web.Request, response: web.StreamResponse) -> None:
    """HSTS on every answer (pages and API alike) the browser got over https, and only there:
    over plain http a browser ignores it, and an allocator served as http on loopback must not
    tell a browser that name is https-only."""
    if request.app[SESSIONS].site.https(request):
        response.headers["Strict-Transport-Security"] = HSTS


# Sessions.


def _any_session(request: web.Request) -> Session:
    session = request.app[SESSIONS].of(request)
    if session is None:
        raise web.HTTPSeeOther(PREFIX + "signin")
    return session


def _session(request: web.Request) -> Session:
    """A user's session; a member is sent to their machine's page, which is all they may see."""
    session = _any_session(request)
    if session.member is not None:
        raise web.HTTPSeeOther(PREFIX + "machine")
    members = request.app[ENGINE].model.members
    if session.operator is not None:
        if not members.operator_still(session.operator):  # a newer operator token replaced it
            raise web.HTTPSeeOther(PREFIX + "signin")
    else:
        user = request.app[ENGINE].users.users.get(session.user)
        if user is None or user.token_sha256 != session.token:  # gone, or its token rotated since
            raise web.HTTPSeeOther(PREFIX + "signin")
    return session


def _member_hosts(request: web.Request, session: Session) -> tuple[str, ...]:
    """The hosts a member's session shows; a token replaced since signs the member out."""
    member = request.app[ENGINE].model.members.by_token.get(session.member or "")
    if member is None:
        raise web.HTTPSeeOther(PREFIX + "signin")
    return member.host_ids


def _still_signed_in(request: web.Request, session: Session) -> bool:
    """Whether `session` is still the request's own and its token still its owner's: an open
    page's live part ends when it is not (signed out, expired, the token rotated or replaced)."""
    if request.app[SESSIONS].of(request) is not session:
        return False
    try:
        if session.member is not None:
            _member_hosts(request, session)
        else:
            _session(request)
    except web.HTTPSeeOther:
        return False
    return True


def _user(request: web.Request, session: Session) -> User:
    return request.app[ENGINE].users.users[session.user]


def _same_origin(request: web.Request) -> None:
    """Refuse a POST that another site's page sent (the browser says so in its headers)."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site not in (None, "same-origin", "none") or (
        origin is not None and origin != request.app[SESSIONS].site.origin_of(request)
    ):
        raise web.HTTPForbidden(text="this form must be sent from Potluck's own page")


async def _read_form(request: web.Request) -> Any:
    """The posted form; a body no browser sends (a charset without a codec, multipart without
    its boundary) is the client's error, not the allocator's."""
    try:
        form = await within(request.post(), request.app[BODY_READ])
    except (ValueError, LookupError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the form could not be read: send it from Potluck's own page") from None
    twice = _given_twice(form, FORM_NAMES, "a field")
    if twice is not None:
        # Read here the first would count, where a proxy or an audit may have read the last
        # (`token=mine&token=yours`): one form, two meanings. No page of Potluck's sends one.
        raise web.HTTPBadRequest(
            text=f"the form gives {twice} more than once: send it from Potluck's own page"
        )
    return form


def _given_twice(values: Any, known: frozenset[str], other: str) -> str | None:
    """The first name `values` (a query or a form, a multidict) holds more than once, if any:
    itself when the pages read it (`known`), else `other`. A name of the sender's own is never
    repeated: it is the text of whoever wrote the link (`?Session expired, sign in at
    evil.example=` twice), which the page would say in Potluck's name."""
    seen: set[str] = set()
    for name, _ in values.items():  # every value's name (iterating names gives each once)
        if name in seen:
            return str(name) if name in known else other
        seen.add(name)
    return None


async def _form_of(request: web.Request, session: Session) -> Any:
    _same_origin(request)
    form = await _read_form(request)
    sent = form.get("csrf")
    if not session.csrf_ok(sent if isinstance(sent, str) else None):
        raise web.HTTPForbidden(text="the form is stale or not from this page; reload it and try again")
    return form


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _render(name: str, request: web.Request, context: dict[str, Any], status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(name, request, context, status=status)


def _fragment(name: str, request: web.Request, context: dict[str, Any]) -> str:
    return aiohttp_jinja2.render_string(name, request, context)


async def _live(
    request: web.Request, session: Session, send: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """`send` a live stream while the session and its owner hold fewer than their bound (429
    else), and the allocator fewer than its own (503 else)."""
    slots = request.app[STREAMS]
    try:
        slots.take(session, session.owner)
    except TooManyStreams as exc:
        full = isinstance(exc, StreamsFull)
        log.info("web.streams_refused", owner=session.owner, error=str(exc), full=full)
        retry = STREAMS_FULL_RETRY_S if full else STREAMS_RETRY_S
        headers = {"Retry-After": str(retry), "Cache-Control": "no-store"}
        return web.Response(status=503 if full else 429, text=str(exc), headers=headers)
    try:
        return await send()
    finally:
        slots.give_back(session, session.owner)


def _stream(
    request: web.Request, session: Session, render: Callable[[], str]
) -> Awaitable[web.StreamResponse]:
    """The page's live part, `render`ed anew as the fold moves (live.stream), within the bounds."""
    signed_in = functools.partial(_still_signed_in, request, session)
    return _live(request, session, lambda: stream(request, request.app[CHANGES], render, signed_in))


async def signin_form(request: web.Request) -> web.Response:
    return _render("signin.html", request, {"session": None, "error": None})


#: What a sign-in posted without its origin is told (_from_a_page).
SIGNIN_WITHOUT_ORIGIN = (
    "sign in from this sign-in page in a browser: the form arrived without the Origin header "
    "every browser sends with it, so the allocator cannot tell it was not another site's page "
    "signing this browser in to someone else's account (scripts use the API with "
    "`Authorization: Bearer <token>` instead)"
)


def _from_a_page(request: web.Request) -> bool:
    """Whether a sign-in says which page posted it, as every browser's form POST does (Origin,
    or at least Sec-Fetch-Site: same-origin). One that says nothing was not refused by
    `_same_origin`, which refuses only another site named: another site's page whose form
    reached the allocator without an Origin (a browser that sends none on forms, as Firefox
    before 70; a proxy or an extension that strips it) signed the victim in to the attacker's
    account (login CSRF), and what they asked of the pool next went to that account. The
    pages' other forms carry the session's CSRF token; sign-in has no session yet. API
    clients are not concerned: they send a bearer token to /v1, never this form."""
    return "Origin" in request.headers or request.headers.get("Sec-Fetch-Site") == "same-origin"


async def signin(request: web.Request) -> web.Response:
    _same_origin(request)
    if not _from_a_page(request):
        log.info("web.signin_without_origin", remote=client_of(request.remote))
        return _render("signin.html", request, {"session": None, "error": SIGNIN_WITHOUT_ORIGIN}, status=403)
    authenticator = request.app[AUTHENTICATOR]
    source = client_of(request.remote)  # as the API counts it: an IPv6 address's /64
    if not request.app[SESSIONS].can_keep_cookie(request):
        error = (
            "sign-in needs https (or this page opened on 127.0.0.1): over plain http the token "
            "would cross the network in clear and the browser would drop the session cookie "
            "(behind a TLS proxy, the operator gives the allocator --public-url https://NAME)"
        )
        return _render("signin.html", request, {"session": None, "error": error}, status=400)
    form = await _read_form(request)
    sent = form.get("token")
    token = as_given(sent) if isinstance(sent, str) else ""
    members = request.app[ENGINE].model.members
    # Whose the token is, looked up once: the operators', a member's, a user's as folded now.
    operator = bool(token) and members.is_operator(token)
    member = members.authenticate(token) if token and not operator else None
    user = authenticator.known(token) if token and not operator and member is None else None
    if not (operator or member or user):
        locked = authenticator.locked(source)
        if locked is not None:
            # The same limit as the API's bearer tokens: guessing through the form costs as
            # much, and a token that is good signs in all the same (see Authenticator.known).
            wait = f"too many failed sign-ins from {source}; try again in {locked.retry_after_s:.0f} s"
            response = _render("signin.html", request, {"session": None, "error": wait}, status=429)
            response.headers["Retry-After"] = str(max(1, round(locked.retry_after_s)))
            return response
        if token:  # perhaps a user added a moment ago; a failure counts against the address
            try:
                user = await authenticator.authenticate(source, token)
            except LogUnreadable:
                unknown = (
                    "this token is not known yet and the pool's event log cannot be read just now "
                    f"to look it up; try again in {LOG_OUTAGE_RETRY_AFTER_S} seconds or so"
                )
                response = _render("signin.html", request, {"session": None, "error": unknown}, status=503)
                response.headers["Retry-After"] = str(LOG_OUTAGE_RETRY_AFTER_S)
                return response
    if operator or member or user:
        sessions = request.app[SESSIONS]
        try:
            if operator:
                response = _see_other("/")
                sessions.start(response, request, OPERATOR, operator=members.operator_token)
                log.info("web.operator_signed_in")
                return response
            if member is not None:
                response = _see_other(PREFIX + "machine")
                sessions.start(response, request, "member", member=member.token_sha256)
                log.info("web.member_signed_in", hosts=list(member.host_ids))
                return response
            if user is not None:
                response = _see_other("/")
                sessions.start(response, request, user.name, token=user.token_sha256)
                log.info("web.signed_in", user=user.name)
                return response
        except SessionsFull as exc:
            # Nobody else's session is ended to make room: the new one waits for one to end.
            log.warning("web.sessions_full", error=str(exc))
            full = (
                "this allocator holds as many web sessions as it can; try again later "
                "(the potluck command works meanwhile)"
            )
            response = _render("signin.html", request, {"session": None, "error": full}, status=503)
            response.headers["Retry-After"] = str(SESSIONS_FULL_RETRY_S)
            return response
    error = "this token is not valid; an operator gives tokens with `potluck ops users add`"
    gone = authenticator.users.removed_holder(token) if token else None
    if gone is not None:
        error = f"user {gone.name} was removed by the pool's operator; this token no longer works"
    return _render("signin.html", request, {"session": None, "error": error}, status=401)


async def signout(request: web.Request) -> web.Response:
    session = _any_session(request)
    await _form_of(request, session)
    response = _see_other(PREFIX + "signin")
    request.app[SESSIONS].end(response, request)
    return response


# The pool.


def _pool_context(request: web.Request, session: Session) -> dict[str, Any]:
    engine = request.app[ENGINE]
    everyone = session.operator is not None
    return {"pool": views.pool_page(engine.model, engine.position, session.user, everyone=everyone)}


async def pool_page(request: web.Request) -> web.Response:
    session = _session(request)
    raw = request.query.get("at")
    if raw is None:
        return _render(
            "pool.html", request, {"session": session, "at": None, **_pool_context(request, session)}
        )
    try:
        moment = history.parse_at(raw)
    except ValueError as exc:
        return _render("bad_request.html", request, {"session": session, "what": str(exc)}, status=400)
    try:
        model, position = await request.app[PAST].at(moment, session.owner)
    except Busy as exc:
        return _busy(request, session, exc)
    past = views.pool_page(model, position, session.user, everyone=session.operator is not None)
    return _render("pool.html", request, {"session": session, "at": raw, "pool": past})


def _busy(request: web.Request, session: Session, busy: Busy) -> web.Response:
    """A past page that cannot be worked out now (past.py's bounds): say so, and when to retry."""
    response = _render("busy.html", request, {"session": session, "what": busy.message}, status=busy.status)
    response.headers["Retry-After"] = str(BUSY_RETRY_S)
    return response


async def history_page(request: web.Request) -> web.Response:
    session = _session(request)
    engine = request.app[ENGINE]
    try:
        series = await request.app[PAST].samples(engine.clock(), None, session.owner)
    except Busy as exc:
        return _busy(request, session, exc)
    plots = [history.plot(series, "cpus"), history.plot(series, "memory")]
    return _render("history.html", request, {"session": session, "plots": plots, "position": engine.position})


async def pool_live(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    return await _stream(
        request, session, lambda: _fragment("_pool.html", request, _pool_context(request, session))
    )


# A user's allocations.


def _mine_context(request: web.Request, session: Session) -> dict[str, Any]:
    # Operators see every user's.
    user = None if session.operator is not None else session.user
    return {"mine": mine_of(request.app[ENGINE].model, user), "operator": session.operator is not None}


async def mine_page(request: web.Request) -> web.Response:
    session = _session(request)
    return _render("mine.html", request, {"session": session, **_mine_context(request, session)})


async def mine_live(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    return await _stream(
        request, session, lambda: _fragment("_mine.html", request, _mine_context(request, session))
    )


#: What an allocation's id may look like for a page to repeat it: a link cannot make the page
#: say a sentence of its own ("no allocation x - your token leaked, paste it at ..."), nor one
#: spelled with dots and dashes ("SESSION-EXPIRED.SIGN-IN-AT-..."): ids are a letter, a dash
#: and hex digits (decisions.new_alloc_id).
SHOWN_ID = re.compile(r"[a-z]-[0-9a-f]{1,32}")


def _not_found(request: web.Request, session: Session, alloc_id: str) -> web.Response:
    what = (
        f"no allocation {alloc_id} of yours"
        if SHOWN_ID.fullmatch(alloc_id)
        else "no such allocation of yours"
    )
    return _render("not_found.html", request, {"session": session, "what": what}, status=404)


def _allocation_context(
    request: web.Request, session: Session, alloc_id: str, stored: AllocationState | None = None
) -> dict[str, Any] | None:
    """What the allocation's page shows, of the model's allocation (or of `stored`, read from
    the log); None when the session may not see it."""
    engine = request.app[ENGINE]
    state = engine.allocations.allocations.get(alloc_id) if stored is None else stored
    if state is None:
        return None
    if session.operator is None and state.user != _user(request, session).name:
        return None
    (row,) = views.allocation_rows(engine.model, [state])
    return {"alloc": row, "state": state, "waiting": engine.standing(state)}


async def allocation_page(request: web.Request) -> web.Response:
    session = _session(request)
    try:
        return await _allocation_page(request, session)
    except RateExceeded as exc:
        # Past the user's fetches (user_rates.py): the page says so, as a busy past page does.
        response = _render("busy.html", request, {"session": session, "what": exc.message}, status=429)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response


async def _allocation_page(request: web.Request, session: Session) -> web.Response:
    alloc_id = request.match_info["alloc_id"]
    context = _allocation_context(request, session, alloc_id)
    fetches = request.app[ENGINE].fetches  # the API's fetches and these share one rate
    if context is None and ALLOC_ID.fullmatch(alloc_id):
        # Ended longer than the retention window ago, the model no longer holds it: the log does.
        fetches.admit(session.user)
        stored = await stored_allocation(request.app[ENGINE].store, alloc_id)
        context = None if stored is None else _allocation_context(request, session, alloc_id, stored)
    if context is None:
        return _not_found(request, session, alloc_id)
    fetches.admit(session.user)
    recorded = await request.app[ENGINE].store.read_stream(alloc_stream(alloc_id))
    records = [
        HistoryEntry(
            position=r.position, version=r.version, type=r.type, recorded_at=r.recorded_at, data=r.data
        )
        for r in recorded
    ]
    return _render(
        "allocation.html",
        request,
        {
            "session": session,
            "timeline": views.timeline(records),
            "trace": await trace_of(recorded),
            "ssh_line": plain_ssh_line(alloc_id),
            "extend_choices": list(EXTEND_CHOICES),
            "error": ACTION_ERRORS.get(request.query.get("error", "")),
            **context,
        },
    )


async def job_page(request: web.Request) -> web.Response:
    session = _session(request)
    job_id = request.match_info["job_id"]
    engine = request.app[ENGINE]
    job = engine.model.jobs.jobs.get(job_id)
    if job is None or (session.operator is None and job.user != _user(request, session).name):
        # Another user's job is as good as absent; one ended before the retention window is
        # no longer in the model (`potluck job show` reads it from the log).
        shown = job_id if SHOWN_ID.fullmatch(job_id) else "such a job"
        what = f"no job {shown} of yours here (`potluck job show` reads older ones)"
        return _render("not_found.html", request, {"session": session, "what": what}, status=404)
    return _render("job.html", request, {"session": session, "job": job_view(engine.model, job)})


async def allocation_live(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    alloc_id = request.match_info["alloc_id"]
    if _allocation_context(request, session, alloc_id) is None:
        return _not_found(request, session, alloc_id)

    def render() -> str:
        context = _allocation_context(request, session, alloc_id) or {}
        return _fragment("_allocation.html", request, context)

    return await _stream(request, session, render)


async def allocation_log(request: web.Request) -> web.StreamResponse:
    """The container's log as it grows, for the owner or an operator only (404 otherwise, as the page)."""
    session = _session(request)
    alloc_id = request.match_info["alloc_id"]
    if _allocation_context(request, session, alloc_id) is None:
        return _not_found(request, session, alloc_id)

    def where() -> Whereabouts | None:
        context = _allocation_context(request, session, alloc_id)
        if context is None:
            return None
        return Whereabouts(status=context["state"].status, host_id=context["state"].host_id)

    changes, logs = request.app[CHANGES], request.app[LOGS]
    signed_in = functools.partial(_still_signed_in, request, session)
    return await _live(
        request, session, lambda: follow_log(request, changes, logs, alloc_id, where, signed_in)
    )


async def _act(
    request: web.Request, act: Callable[[AllocatorEngine, User, str, Any], Awaitable[object]]
) -> web.Response:
    session = _session(request)
    form = await _form_of(request, session)
    if session.operator is not None:
        raise web.HTTPForbidden(text="operators look here; an allocation's user extends or releases it")
    alloc_id = request.match_info["alloc_id"]
    if _allocation_context(request, session, alloc_id) is None:
        return _not_found(request, session, alloc_id)
    page = f"{PREFIX}allocations/{alloc_id}"
    try:
        user = _user(request, session)
        request.app[USER_RATES].admit(user.name)  # the API's changes and these share one rate
        await act(request.app[ENGINE], user, alloc_id, form)
    except Rejected as exc:
        # Only the code goes back, and only one the page has words for (ACTION_ERRORS).
        code = exc.code if exc.code in ACTION_ERRORS else "REFUSED"
        log.info("web.action_refused", alloc_id=alloc_id, code=exc.code, error=exc.message)
        raise web.HTTPSeeOther(f"{page}?{urlencode({'error': code})}") from None
    raise web.HTTPSeeOther(page)


async def _extend(engine: AllocatorEngine, user: User, alloc_id: str, form: Any) -> object:
    by = form.get("by")
    if by not in EXTEND_CHOICES:
        raise Rejected.invalid_field("by", f"extend by one of {', '.join(EXTEND_CHOICES)}")
    return await engine.extend(user, alloc_id, EXTEND_CHOICES[by])


async def _release(engine: AllocatorEngine, user: User, alloc_id: str, form: Any) -> object:
    return await engine.release(user, alloc_id)


async def extend(request: web.Request) -> web.Response:
    return await _act(request, _extend)


async def release(request: web.Request) -> web.Response:
    return await _act(request, _release)


# A member's machine.


def _machine_context(request: web.Request, host_ids: tuple[str, ...]) -> dict[str, Any]:
    return {"machines": views.machine_page(request.app[ENGINE].model, host_ids)}


async def machine_page(request: web.Request) -> web.Response:
    session = _any_session(request)
    if session.member is None:
        raise web.HTTPSeeOther("/")
    host_ids = _member_hosts(request, session)
    engine = request.app[ENGINE]
    try:
        series = await request.app[PAST].samples(engine.clock(), frozenset(host_ids), session.owner)
    except Busy as exc:
        return _busy(request, session, exc)
    plots = [history.plot(series, "cpus"), history.plot(series, "memory")]
    return _render(
        "machine.html", request, {"session": session, "plots": plots, **_machine_context(request, host_ids)}
    )


async def machine_live(request: web.Request) -> web.StreamResponse:
    session = _any_session(request)
    host_ids = _member_hosts(request, session)
    return await _stream(
        request, session, lambda: _fragment("_machine.html", request, _machine_context(request, host_ids))
    )
