"""The allocator at work on the bus: desired-state snapshots for hosts, and hosts' reports.

The HTTP API (api.py) and placement (scheduler.py) decide new allocations;
this module keeps the read model current from the log, answers each hostd's
snapshot request, and turns reports into lifecycle events. A report from a
host that left or was revoked is dropped (counted and logged), never a fact.

A snapshot is answered only into the asking host's own inbox, and the state
(ALLOCATOR_STATE, services only) only into the services' inbox: the allocator
publishes with an identity NATS lets publish anywhere, so a reply subject
elsewhere is refused, logged and counted (potluck.events' ReplyGuard).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import TypeAdapter, ValidationError

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.host_rates import DESIRED_RATE, IMAGE_TOKEN_RATE, HostRates
from potluck.allocator.image_locality import record_images_held
from potluck.allocator.image_tokens import image_token_responder
from potluck.allocator.lifecycle import Decision, decide, decide_actual_state
from potluck.allocator.live_state import state_responder
from potluck.allocator.placement_traces import placement_traces
from potluck.allocator.pool_registry import PoolRegistry
from potluck.allocator.request_bodies import BODY_READ_S
from potluck.allocator.stored import stored_allocation
from potluck.contracts.allocation_events import AllocationRestarted, alloc_stream
from potluck.contracts.messages import DesiredAllocation, DesiredState, Reply, unstorable_field
from potluck.contracts.reports import ActualState, AnyReport, EngineStatus, ImagesHeld, UsageSampled
from potluck.contracts.subjects import ALLOCATOR_STATE, DESIRED, IMAGE_TOKEN, host_of, inbox_prefix
from potluck.events import (
    REPORTS_STREAM,
    DuplicateEvent,
    EventStore,
    NewEvent,
    PoisonMessage,
    SkippedEvents,
    StreamAppend,
    Subscriber,
    decide_and_append,
    ensure_streams,
    event_id_for,
)
from potluck.events.checkpoints import Checkpointer, checkpoint_policy
from potluck.events.replies import ReplyGuard
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.readmodels.allocations import AllocationState

if TYPE_CHECKING:
    from potluck.allocator.web.origins import PublicUrl

log = structlog.get_logger(__name__)

_reports: TypeAdapter[AnyReport] = TypeAdapter(AnyReport)

#: Engine reports logged per host: hostd reports its engine when it comes or goes, so a host
#: past this is in a loop (or hostile), and its reports, still read, are logged sparingly.
ENGINE_LOG_RATE = RatePolicy(per_s=0.1, burst=10)
#: Image sets logged per host (HostImagesReported, up to 48 KB each): hostd reports its images
#: after each registration and when they change, so a host past this is in a loop (or hostile);
#: what comes faster is held back, each set superseding the one before, and logged at the
#: host's next report the rate allows. Without it a host in a loop could fill the log's disk.
IMAGES_RECORD_RATE = RatePolicy(per_s=0.2, burst=20)
#: Restarts logged per allocation (AllocationRestarted): hostd starts a container again at most
#: 5 times in 10 minutes (its RestartBudget), so twice that is never reached but by a host in a
#: loop (or hostile), whose restarts past it are dropped: they change only the history.
RESTARTS_RECORD_RATE = RatePolicy(per_s=10 / 600, burst=10)
#: State reports judged per host: each costs a read of every allocation on the host, and hostd
#: sends one after each reconnect and every `state_report_interval_s` (5 minutes). A host past
#: this is in a loop (or hostile): its state reports are dropped unread, and the next one in
#: its time repairs whatever a dropped one would have; the other hosts' reports, read by the
#: same consumer in stream order, no longer wait behind them.
STATE_REPORT_RATE = RatePolicy(per_s=0.5, burst=10)
#: How long the API keeps a connection that has no request under way: from its opening or its
#: last answer, whether silent or sending a request's head a byte at a time (aiohttp's own
#: default is an hour, which let slow clients hold connections and their memory at no cost).
#: Long answers (a page's live stream, `?wait=`) are requests under way, not idle. Above the
#: 15 s aiohttp's and most clients keep an idle connection, so they close theirs first.
IDLE_CONNECTION_S = 30.0
#: How long a connection whose answer went out early (a 408, a 413) keeps reading and dropping
#: what the client still sends before it is closed: aiohttp's own default.
LINGERING_S = 10.0
#: How long requests under way when the allocator stops (an append, a body arriving) have to
#: end before their connections are closed. aiohttp's own is a minute, past the grace most
#: supervisors give a process (then killed mid-fold); long polls and the pages' streams are
#: answered and ended at once (long_polls.py, web/live.py).
STOP_REQUESTS_S = 10.0
#: Of an engine report's detail, this much reaches the log (the engine's own error text).
LOGGED_DETAIL = 500


async def load_allocation(
    store: EventStore, alloc_id: str, *, skipped: SkippedEvents | None = None
) -> AllocationState | None:
    """The allocation as its own stream says now (None: no such allocation).

    An event of the stream that cannot be read is skipped (logged, and counted
    in `skipped` when given) but still counts in the version, as in the model.
    The engine's fold counts each unreadable event of the log once already, so
    the service's own loads leave `skipped` out.
    """
    return await stored_allocation(
        store, alloc_id, skipped=SkippedEvents() if skipped is None else skipped, reader="allocator"
    )


async def append_decisions(store: EventStore, decisions: list[Decision], source_id: str) -> None:
    """Append each decision atomically; ids derive from the source message, so a redelivery is a no-op."""
    for decision in decisions:
        appends = []
        index = 0
        for stream, events in decision.streams.items():
            new = []
            for event in events:
                new.append(
                    NewEvent(
                        event,
                        event_id=event_id_for("report", f"{source_id}/{decision.alloc_id}", index),
                    )
                )
                index += 1
            expected = decision.expected if stream == alloc_stream(decision.alloc_id) else None
            appends.append(StreamAppend(stream, new, expected))
        try:
            await store.append_streams(appends, metadata={"actor": "allocator", "causation_id": source_id})
        except DuplicateEvent:
            log.info("allocator.report_already_applied", source=source_id)


def report_decoder(msg: Msg) -> tuple[str, AnyReport]:
    parts = msg.subject.split(".")
    if len(parts) != 4:
        raise PoisonMessage(f"unexpected report subject {msg.subject}")
    report = _reports.validate_json(msg.data)
    # A report's texts become facts in the log (a failure's detail, a container's id, the
    # images held), and valid JSON can hold what Postgres' JSON cannot (`\u0000`, a lone
    # surrogate). Refused here, such a report is a dead letter at once; taken, each failed its
    # append three times over (a database error, a traceback, backoff) before it was, and a
    # host sending them in a loop kept the pool's one report consumer on its own messages.
    problem = unstorable_field(report)
    if problem is not None:
        raise PoisonMessage(f"{report.kind} report from {parts[2]}: {problem}")
    return parts[2], report


class AllocatorService:
    """The allocator process: read model, reactions, hostd's snapshots and reports, and the HTTP API."""

    def __init__(
        self,
        store: EventStore,
        nc: NATS,
        engine: AllocatorEngine | None = None,
        *,
        registry: PoolRegistry | None = None,
    ) -> None:
        self.store = store
        self.nc = nc
        self.engine = engine or AllocatorEngine(store)
        self.registry = registry
        self.replies = ReplyGuard("allocator")
        self.desired_rates = HostRates("its desired state", DESIRED_RATE, self.replies)
        self.image_token_rates = HostRates("registry tokens", IMAGE_TOKEN_RATE, self.replies)
        #: Reports dropped per host because the host left or was revoked before they were read.
        self.dropped_from_gone: dict[str, int] = {}
        self.engine_logs = KeyRates(ENGINE_LOG_RATE)
        self.image_records = KeyRates(IMAGES_RECORD_RATE)
        self.restart_records = KeyRates(RESTARTS_RECORD_RATE)
        self.state_reports = KeyRates(STATE_REPORT_RATE)
        #: Per host, the latest image set the rate held back, logged at its next report.
        self.held_back_images: dict[str, ImagesHeld] = {}

    async def run(self, *extra: Callable[[], Awaitable[None]]) -> None:
        await ensure_streams(self.nc.jetstream())
        await self.engine.catch_up(resume=True)
        checkpointer = Checkpointer(
            self.engine.checkpoints(),
            self.engine.checkpoint_state,
            lambda: self.engine.position,
            **checkpoint_policy(),
            saved_at=self.engine.resumed_from,
        )
        sub = await self.nc.subscribe(f"{DESIRED}.*", queue="allocator", cb=self._on_desired)
        state_sub = await self.nc.subscribe(
            ALLOCATOR_STATE, queue="allocator", cb=state_responder(self.engine, self.replies)
        )
        token_sub = await self.nc.subscribe(
            f"{IMAGE_TOKEN}.*",
            queue="allocator",
            cb=image_token_responder(
                lambda: self.engine.allocations,
                self.registry,
                self.replies,
                lambda: self.engine.fold.caught_up_with(self.store, timeout=2.0),
                rates=self.image_token_rates,
            ),
        )
        reports = Subscriber(
            self.nc,
            durable="allocator-reports",
            stream=REPORTS_STREAM,
            subjects=["potluck.report.>"],
            decode=report_decoder,
            handle=self._on_report,
        )
        try:
            await asyncio.gather(
                self.engine.follow(),
                self.engine.run_reactions(),
                reports.run(),
                checkpointer.run(),
                *(job() for job in extra),
            )
        finally:
            await sub.unsubscribe()
            await state_sub.unsubscribe()
            await token_sub.unsubscribe()

    async def _on_desired(self, msg: Msg) -> None:
        host_id = host_of(msg.subject)
        if not await self.desired_rates.admit(msg):
            return
        if not self.replies.allows(msg, inbox_prefix(host_id), requester=host_id):
            return
        # All of it as of one position: the engine goes on folding during the lookup below.
        allocations, position = self.engine.allocations, self.engine.position
        desired, kept = allocations.desired_for(host_id), allocations.kept_on(host_id)
        traces = await placement_traces(self.store, desired)
        snapshot = DesiredState(
            position=position,
            allocations=[
                DesiredAllocation(
                    alloc_id=a.alloc_id,
                    spec=a.spec,
                    expires_at=a.expires_at,
                    trace=traces.get(a.alloc_id, {}),
                )
                for a in desired
            ],
            kept=[a.alloc_id for a in kept],
        )
        await msg.respond(Reply(ok=True, data=snapshot.model_dump(mode="json")).model_dump_json().encode())

    async def _on_report(self, item: tuple[str, AnyReport]) -> None:
        host_id, report = item
        if self._from_gone_host(host_id, report):
            return
        if isinstance(report, ImagesHeld):
            await self._record_images(host_id, report)
            return
        held = self.held_back_images.get(host_id)
        if held is not None:
            await self._record_images(host_id, held)
        if isinstance(report, UsageSampled):
            return  # metrics, not facts
        if isinstance(report, EngineStatus):
            self._log_engine(host_id, report)
            return
        if isinstance(report, ActualState) and not self._state_report_read(host_id):
            return

        async def attempt() -> None:
            if isinstance(report, ActualState):
                states = [
                    s
                    for a in self.engine.allocations.desired_for(host_id)
                    if (s := await load_allocation(self.store, a.alloc_id)) is not None
                ]
                decisions = decide_actual_state(states, host_id, report)
            else:
                decision = decide(await load_allocation(self.store, report.alloc_id), host_id, report)
                decisions = [decision] if decision and not self._restart_dropped(host_id, decision) else []
            await append_decisions(self.store, decisions, report.report_id)

        try:
            await decide_and_append(attempt)
        except ValidationError as exc:
            raise PoisonMessage(str(exc)) from exc

    async def _record_images(self, host_id: str, report: ImagesHeld) -> None:
        """Log the host's image set within IMAGES_RECORD_RATE; one past it is held back until
        the host's next report the rate allows, superseded by any later set meanwhile."""

        def admit() -> bool:
            verdict = self.image_records.check(host_id, time.monotonic())
            if not verdict.allowed and verdict.log:
                log.warning(
                    "allocator.host_images_held_back",
                    host_id=host_id,
                    held_back_in_a_row=verdict.streak,
                    hint="a hostd reports a new image set only when its engine's images change: "
                    "look at that host; its latest set is logged once it reports slower",
                )
            return verdict.allowed

        # `report` is the held-back set itself or a later one: either way nothing older waits.
        if await record_images_held(self.store, host_id, report, admit):
            self.held_back_images.pop(host_id, None)
        else:
            self.held_back_images[host_id] = report

    def _state_report_read(self, host_id: str) -> bool:
        """Is the host's state report within STATE_REPORT_RATE? One past it is dropped unread,
        counted, and logged sparingly."""
        verdict = self.state_reports.check(host_id, time.monotonic())
        if not verdict.allowed and verdict.log:
            log.warning(
                "allocator.host_state_reports_dropped",
                host_id=host_id,
                dropped_in_a_row=verdict.streak,
                hint="hostd reports its state after a reconnect and every few minutes: look at "
                "that host; its next report in its time is read",
            )
        return verdict.allowed

    def _restart_dropped(self, host_id: str, decision: Decision) -> bool:
        """Is `decision` a restart past RESTARTS_RECORD_RATE for its allocation? Then it is
        dropped (it changes only the history), counted and logged sparingly."""
        if not any(isinstance(e, AllocationRestarted) for e in decision.alloc_events):
            return False
        verdict = self.restart_records.check(decision.alloc_id, time.monotonic())
        if not verdict.allowed and verdict.log:
            log.warning(
                "allocator.host_restarts_dropped",
                host_id=host_id,
                alloc_id=decision.alloc_id,
                dropped_in_a_row=verdict.streak,
                hint="hostd restarts a container at most 5 times in 10 minutes: look at that host",
            )
        return not verdict.allowed

    def _log_engine(self, host_id: str, report: EngineStatus) -> None:
        verdict = self.engine_logs.check(host_id, time.monotonic())
        if verdict.allowed:
            (log.info if report.available else log.warning)(
                "allocator.host_engine",
                host_id=host_id,
                available=report.available,
                detail=report.detail[:LOGGED_DETAIL],
            )
        elif verdict.log:
            log.warning(
                "allocator.host_engine_reports_logged_sparingly",
                host_id=host_id,
                unlogged_in_a_row=verdict.streak,
                hint="a hostd does not report its engine this often: look at that host",
            )

    def _from_gone_host(self, host_id: str, report: AnyReport) -> bool:
        """Is `report` from a host that left or was revoked? Then it is dropped, counted and logged.

        NATS refuses a revoked host's key from the revocation on, but what it sent before
        may still wait in the reports stream: none of it becomes a fact.
        """
        host = self.engine.hosts.hosts.get(host_id)
        if host is None or not host.gone:
            return False
        self.dropped_from_gone[host_id] = self.dropped_from_gone.get(host_id, 0) + 1
        log.warning(
            "allocator.report_from_gone_host_dropped",
            host_id=host_id,
            kind=report.kind,
            host_status=host.status,
            dropped=self.dropped_from_gone[host_id],
            hint="the host left or was revoked; its reports are ignored until an operator enrolls it again",
        )
        return True


async def serve_http(
    engine: AllocatorEngine,
    host: str,
    port: int,
    *,
    registry: PoolRegistry | None = None,
    nc: NATS | None = None,
    public_urls: Sequence["PublicUrl"] = (),
    change_rate: RatePolicy | None = None,
    body_read_s: float = BODY_READ_S,
    idle_s: float = IDLE_CONNECTION_S,
    lingering_s: float = LINGERING_S,
) -> None:
    """The HTTP API until cancelled (with the image registry's endpoints when the pool has one;
    with `nc`, the pages tail containers' logs through the hosts; the pages answer under
    `public_urls`' names too, web/origins.py; each user's changes within `change_rate`,
    user_rates.py; a body within `body_read_s`, request_bodies.py; a connection without a
    request under way closed after `idle_s`, one answered early after `lingering_s`)."""
    from aiohttp import web

    from potluck.allocator.api import make_app
    from potluck.allocator.connection_caps import ConnectionCaps, capped
    from potluck.allocator.http_headers import handler_factory
    from potluck.allocator.http_refusals import refusals_logger
    from potluck.allocator.web.log_tail import LogSource
    from potluck.allocator.web.origins import Site

    logs = LogSource(nc) if nc is not None else None
    site = Site(public_urls)
    app = make_app(
        engine, registry=registry, logs=logs, site=site, change_rate=change_rate, body_read_s=body_read_s
    )
    handler_args: dict[str, Any] = {
        "access_log": None,
        "logger": refusals_logger(),
        "keepalive_timeout": idle_s,
        "lingering_time": lingering_s,
    }
    runner = web.AppRunner(app, shutdown_timeout=STOP_REQUESTS_S, **handler_args)
    await runner.setup()
    assert runner.server is not None  # made by setup()
    try:
        # Our own listener rather than aiohttp's TCPSite: every connection passes the caps
        # before aiohttp makes a handler for it (connection_caps.py says why).
        try:
            listener = await asyncio.get_running_loop().create_server(
                # aiohttp's handlers, but their own error answers (a request its parser
                # refuses) with the headers every answer carries (http_headers.py).
                capped(
                    handler_factory(runner.server, hsts=site.https_anywhere, **handler_args), ConnectionCaps()
                ),
                host,
                port,
                reuse_address=True,
            )
        except OSError as exc:
            raise OSError(
                f"cannot listen on {host}:{port}: {exc.strerror}; is another allocator running?"
            ) from exc
        try:
            log.info("allocator.listening", url=f"http://{host}:{port}")
            await asyncio.Event().wait()
        finally:
            listener.close()  # no new connections; runner.cleanup() ends the open ones
    finally:
        await runner.cleanup()
