"""hostd's side of the bus: register, learn the desired state, follow it, report.

hostd holds no database credentials and opens no port. It dials NATS with its
own nkey; its permissions let it publish only on its own subjects and read
only its own consumer. After every (re)connect it registers again, asks for a
fresh snapshot of what should run here, reconciles, and re-sends what
actually runs: JetStream may have lost reports or events in between.
"""

import asyncio
import contextlib
import random

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    AllocationExited,
    AllocationExpired,
    AllocationFailed,
    AllocationLost,
    AllocationPlaced,
    AllocationReleased,
    AllocationUnplaced,
)
from potluck.contracts.compatibility import CONTRACT_VERSION, unknown_fields
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostConnectionsCapped,
    HostDeregistered,
    HostDrainStarted,
    HostLeft,
    HostPaused,
    HostResumed,
    HostRevoked,
)
from potluck.contracts.host_labels import BAD_LABELS
from potluck.contracts.link import LINK_SIGNATURE_ALGS
from potluck.contracts.messages import (
    DesiredState,
    Heartbeat,
    ImageToken,
    ImageTokenRequest,
    RegisterHost,
    Reply,
)
from potluck.contracts.registry_locality import named_registries
from potluck.contracts.reports import Report, report_subject
from potluck.contracts.subjects import (
    DESIRED,
    HEARTBEAT,
    IMAGE_TOKEN,
    LOG_TAIL,
    REGISTER,
    REPORT_PREFIX,
    host_consumer,
    host_event_filter,
    inbox_prefix,
)
from potluck.events import EVENTS_STREAM, LoggedEvent, MemoryPositions, Subscriber
from potluck.events.bus import TRANSIENT_BUS_ERRORS
from potluck.events.connection import IdentityRefused, connect_bus
from potluck.events.subscriber import decoder_for_logged_events
from potluck.events.tracing import TracedQueue, publish_span
from potluck.hostd.config import HostdConfig
from potluck.hostd.containers import ContainerManager
from potluck.hostd.docker_driver import DockerDriver, DockerDriverError
from potluck.hostd.engine_at_start import HINT, NOT_RUNNING, UNREAD_FACTS, next_wait, worth_saying
from potluck.hostd.exec_bridge import ExecBridge
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.heap import trim_heap_periodically
from potluck.hostd.image_inventory import ImageInventory
from potluck.hostd.image_pull import ImagePuller, PullFailed
from potluck.hostd.log_cost import LogBound
from potluck.hostd.log_tail import LogTailResponder
from potluck.hostd.logind_sleep import listen_to_logind, system_bus_address
from potluck.hostd.no_network import hosts_file_for
from potluck.hostd.policy_runner import PolicyRunner
from potluck.hostd.pool_images import PoolImages
from potluck.hostd.report_publisher import publish_until_stored
from potluck.hostd.shut_out import ShutOut
from potluck.hostd.sleep_clock import SleepClock
from potluck.hostd.sleep_watch import SleepWatch
from potluck.kernel.cancellation import cancel_until_done
from potluck.kernel.redacted_urls import redacted
from potluck.kernel.rejections import Rejected
from potluck.kernel.ssh_identity import host_key_path, require_key_type, ssh_host_key
from potluck.kernel.version import __version__

log = structlog.get_logger(__name__)

#: The service we asked is not there (yet), or the bus is away: ask again later.
_PEER_AWAY: tuple[type[BaseException], ...] = (*TRANSIENT_BUS_ERRORS, nats.errors.NoRespondersError)


#: The registry's refusals after which hostd stops for good instead of retrying: the machine
#: left the pool or was revoked, and only a new enrollment brings it back.
FINAL_REFUSALS = frozenset({"HOST_LEFT", "HOST_REVOKED"})
#: Refusals that say "not now": the registry's database is away, or its view of the log behind.
PASSING_REFUSALS = frozenset({"LOG_UNAVAILABLE", "BUSY", "INTERNAL"})

#: How often a hostd the registry refused for its contract asks again: soon at first (the
#: services' upgrade may be under way), then every few minutes (the member must upgrade).
CONTRACT_RETRY_FIRST_S = 5.0
CONTRACT_RETRY_MAX_S = 300.0
NEWER_POOL = (
    "the pool's services send fields this hostd does not know (they are newer): upgrade Potluck "
    "on this machine (git pull && ops/setup), then restart hostd"
)
MALFORMED_SNAPSHOT = "the allocator's answer is malformed; tell the pool's operator"

#: Refusals of the host's key in a row (about half a second apart) taken as final: the key
#: left NATS's users (a revoked host). A reload of the users file refuses no one on the way.
KEY_REFUSED_AFTER = 4

#: How long one fetch of the host's consumer waits for an event. The server holds the pull
#: request and delivers an event the moment it is logged, so this is not a delay: it is how
#: often an idle host asks again (a 1 s poll cost every idle host 4 NATS messages a second,
#: five times its heartbeats). After a reconnect the fetch is given up and asked again.
EVENT_FETCH_S = 30.0


class HostdStopped(Exception):
    """hostd cannot go on (e.g. not enrolled, left, revoked); the message says what the member
    should do. `potluck hostd` exits with code 3 on it, which `potluck up` does not restart.
    `asked`: the machine left the pool as its member asked (`potluck host leave`), no failure."""

    def __init__(self, message: str, *, asked: bool = False) -> None:
        super().__init__(message)
        self.asked = asked


class BusGivenUp(ConnectionError):
    """nats-py closed hostd's connection for good (connect_bus's `bus.closed_for_good`): hostd
    would go on deaf, placed work never reaching it. `potluck hostd` exits with code 1 on it,
    which `potluck up` and systemd restart: the connection is made anew."""


class Agent:
    def __init__(self, config: HostdConfig, driver: DockerDriver | None = None) -> None:
        """`driver`: the engine; a hollow one (hollow_engine.py) for scale tests, else Docker's."""
        self.config = config
        self.host_id = config.host_id
        self.driver = driver or DockerDriver(
            config.docker_url,
            internal_networks=config.internal_network,
            hosts_file=hosts_file_for(config.docker_url, config.state_dir),
        )
        #: The images the pool brought here: only those, and what allowed_images lists, are run
        #: or reported; a member's own image is, for the pool, absent (pool_images.py).
        self.pool_images = PoolImages.in_state_dir(config.state_dir, config.allowed_images)
        self.driver.image_gate = self.pool_images.admits
        self.outbox: TracedQueue[Report] = TracedQueue()
        puller = ImagePuller(
            config.docker_url,
            self.outbox.put_nowait,
            self._image_token,
            # The disk kept for images when the member set one, else all the donated disk.
            disk_limit_bytes=int(config.image_cache or config.donate.disk),
            named_registries=named_registries(config.allowed_images),
            pool_images=self.pool_images,
        )
        self.containers = ContainerManager(config, self.driver, self.outbox.put_nowait, puller)
        self.images = ImageInventory(
            config,
            self.driver,
            self.outbox.put_nowait,
            wanted=lambda: [spec.image for spec in self.containers.desired.values()],
            pool_images=self.pool_images,
        )
        self.policy = PolicyRunner(config, self.containers, self._request)
        self.exec_bridge = ExecBridge(
            config.docker_url,
            self.host_id,
            state_dir=config.state_dir,
            kept=self.containers.kept,
            env_of=self.containers.env_of,
            disk_bound_of=self.containers.disk_bound_of,
            disk_used_of=self.containers.disk_used,
            let_run=self.containers.let_run,
        )
        #: Counts what containers' output costs the engine against their CPU caps (log_cost.py),
        #: where the member turned it on (config.log_bound) and the engine is Docker's (a hollow
        #: one has no processes to read).
        self.log_bound = (
            LogBound(self.containers, config.docker_url) if driver is None and config.log_bound else None
        )
        self.containers.in_session = self.exec_bridge.sessions.in_session
        self.positions = MemoryPositions()
        #: Whether this agent trims its process's heap; many agents in one process (hollow hosts)
        #: share one trimmer, since each trim collects the whole process.
        self.trims_heap = True
        #: How often the engine is pinged to notice it going away; an in-memory engine never does.
        self.engine_check_s = 2.0
        self._subscriber: Subscriber[LoggedEvent] | None = None
        self.nc: NATS | None = None
        self.admin = "active"
        #: While the host drains: what was left of its grace when this hostd registered.
        self.drain_left_s: float | None = None
        self._resync = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_reason = ""
        self._stop_asked = False
        #: Set when the bus connection is closed for good (BusGivenUp).
        self._bus_gone = asyncio.Event()
        #: While this host's key is shut out of NATS for holding too many connections
        #: (HostConnectionsCapped): refusals meanwhile are no revocation (shut_out.py).
        self.shut_out = ShutOut(config.state_dir)
        self.shut_out.load()
        self.ready = asyncio.Event()
        self.ssh_host_key = ssh_host_key(config.state_dir, config.host_id)
        # The registry refuses any other type (BAD_SSH_HOST_KEY): said here, before a round trip.
        require_key_type(
            host_key_path(config.state_dir),
            self.ssh_host_key.split()[0],
            LINK_SIGNATURE_ALGS,
            remedy="remove it and its .pub from hostd's state_dir and start hostd again: it makes an "
            "ed25519 key there",
        )
        # On waking: tell the registry, then re-sync as after a reconnect.
        self.sleep = SleepWatch(
            self.host_id,
            self._request,
            SleepClock(threshold_s=config.sleep.threshold_s),
            on_woke=self._resync.set,
            check_interval_s=config.sleep.check_interval_s,
        )

    async def run(self) -> None:
        """Serve until cancelled; raises HostdStopped once the machine is out of the pool for good."""
        serving = asyncio.ensure_future(self._serve())
        stopped = asyncio.ensure_future(self._stopped.wait())
        gone = asyncio.ensure_future(self._bus_gone.wait())
        try:
            await asyncio.wait([serving, stopped, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_until_done([stopped, gone, serving])  # nothing for one that ended already
        if self._stopped.is_set():
            raise HostdStopped(self._stop_reason, asked=self._stop_asked)
        if self._bus_gone.is_set():
            raise BusGivenUp(
                f"the connection to NATS at {redacted(self.config.nats_url)} was closed for good and "
                "will not come back; hostd ends so that it is started again"
            )
        serving.result()  # how serving ended: its error, if any

    def _stop(self, reason: str, *, asked: bool = False) -> None:
        """Stop for good, saying `reason` (the machine left or was revoked); `asked`: it left as
        its member asked, which is said as news, not as an error."""
        if not self._stopped.is_set():
            self._stop_reason, self._stop_asked = reason, asked
            self._stopped.set()
            say = log.info if asked else log.error
            say("hostd.stopped_for_good", host_id=self.host_id, reason=reason, hint=reason)

    async def _bus_given_up(self) -> None:
        self._bus_gone.set()

    async def _key_refused(self) -> None:
        stopped = await self.containers.stop_all_cut_off()
        self._stop(
            f"NATS no longer accepts this machine's key (host {self.host_id} revoked, or left the pool?); "
            "ask an operator to enroll it again"
            + (
                f"; the pool's {stopped} container(s) still running here were stopped (their files "
                f"are kept until you remove them: docker ps -a --filter label=potluck.host={self.host_id})"
                if stopped
                else ""
            )
        )

    async def _report_state_periodically(self) -> None:
        """Everything this host runs, reported again every state_report_interval_s (as after
        every reconnect): the allocator judges its allocations by it, so an `exited` or
        `started` JetStream dropped before the allocator read it holds no capacity for longer."""
        while True:
            await asyncio.sleep(self.config.timing.state_report_interval_s)
            with contextlib.suppress(DockerDriverError):
                self.outbox.put_nowait(await self.containers.actual_state(self.positions.last()))

    async def _serve(self) -> None:
        facts = await self._engine_facts_now()
        # Before registering: the pool must never be promised what this machine does not have.
        # An engine not running yet cannot say; the machine is registered as engine away then,
        # which takes no work, and checked once the engine answers (_engine_after_start).
        if facts is not None and not await self._donation_fits(facts):
            return
        try:
            self.nc = await connect_bus(
                self.config.nats_url,
                name=f"hostd-{self.host_id}",
                seed=self.config.nats_seed(),
                inbox_prefix=inbox_prefix(self.host_id),
                on_reconnect=self._on_reconnect,
                refused_after=KEY_REFUSED_AFTER,
                on_refused=self._key_refused,
                excused=self.shut_out.reason,
                on_closed_for_good=self._bus_given_up,
            )
        except IdentityRefused:
            await self._key_refused()
            return
        beating: asyncio.Future[None] | None = None
        sending: asyncio.Future[None] | None = None
        try:
            if facts is None:
                # Said before the registration too: the pool then mostly records a machine it
                # knows from an earlier run engine away before it is online again, rather than
                # schedulable for a moment in between. Reports flow from here on.
                sending = asyncio.ensure_future(self._send_reports())
                self.containers.engine_at_start(False, NOT_RUNNING)
            await self._register(facts or UNREAD_FACTS)
            # Beating from the registration on, not from the end of the first sync: the sync
            # waits for the allocator's answer (stopped or restarting: 5 s a try) and for the
            # engine (listing and adopting what runs: slow when busy or just booted), and
            # meanwhile the registry heard nothing; past its silence the machine was declared
            # lost and its running work given up (seen in a full run: 4.5 s against the tests'
            # 1.5 s). A reconnect's sync beats throughout already.
            beating = asyncio.ensure_future(self._beat())
            if facts is None:
                # A machine new to the pool is registered only now: the report before was dropped.
                self.containers.report_engine_again()
                facts = await self._engine_after_start()
                if facts is None:
                    return  # stopped: the donation is past the machine the engine runs on
            await self._sync()
            # The web page's log tail: answered here, one bounded page a request (log_tail.py).
            log_tail = LogTailResponder(self.exec_bridge)
            await self.nc.subscribe(f"{LOG_TAIL}.{self.host_id}", cb=log_tail.answer)
            self.ready.set()
            subscriber = self._subscriber = Subscriber(
                self.nc,
                durable=host_consumer(self.host_id),
                stream=EVENTS_STREAM,
                subjects=[host_event_filter(self.host_id)],
                decode=decoder_for_logged_events(),
                handle=self._on_event,
                positions=self.positions,
                # One event a fetch: a fetch of one returns the moment it arrives, where a batch's
                # fetch waits out its timeout for the rest. A host's events are few.
                batch_size=1,
                fetch_timeout=EVENT_FETCH_S,
                create_consumer=False,
                dead_letter_subject=f"{REPORT_PREFIX}.{self.host_id}.dead_letter",
            )
            await asyncio.gather(
                subscriber.run(),
                sending if sending is not None else self._send_reports(),
                beating,
                trim_heap_periodically() if self.trims_heap else asyncio.Event().wait(),
                self._resync_after_reconnect(facts),
                self._report_state_periodically(),
                self.containers.watch_docker_events(),
                self.containers.watch_engine(self.engine_check_s),
                self.containers.guard_disk(),
                self.containers.sample_usage(),
                self.log_bound.run() if self.log_bound is not None else asyncio.Event().wait(),
                self.images.run(),
                self.sleep.run(),
                listen_to_logind(self.sleep, system_bus_address(self.config.sleep.dbus_address)),
                self.policy.run(),
                self._link(),
            )
        finally:
            await cancel_until_done([f for f in (beating, sending) if f is not None])
            # Not drain(): the tasks that would take what is still queued are cancelled by now,
            # so drain() waited out its timeout on every stop. What hostd published is flushed,
            # unless the server is gone (it drops a machine that left): flushing then waits out
            # its timeout, and the cancellation run() sends again after 1 s cut close() off.
            if self.nc.is_connected:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await self.nc.flush()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.nc.close()
            self.driver.close()

    async def _link(self) -> None:
        """Serve sessions through the gateways in the config (gateway_link.py), forever.

        gateway_link, and asyncssh with it (~18 MB resident), is imported only by a hostd
        that has gateways: one without them only ends the sessions' processes a previous
        run left (as keep_linked would) and waits.
        """
        if not self.config.gateways:
            with contextlib.suppress(ExecError, OSError):
                await self.exec_bridge.reap_orphans()
            log.info("link.no_gateways", hint="add [[gateways]] to hostd's config to reach sessions")
            await asyncio.Event().wait()
        from potluck.hostd.gateway_link import keep_linked

        await keep_linked(
            self.host_id, host_key_path(self.config.state_dir), self.config.gateways, self.exec_bridge
        )

    async def _donation_fits(self, facts: EngineFacts) -> bool:
        """Whether the donation fits the machine the engine runs on; if not, hostd stops for
        good, saying which part does not (the member must change hostd.toml)."""
        _log_user_namespaces(facts)
        try:
            machine = await asyncio.to_thread(self.driver.machine)
        except DockerDriverError:
            return True  # the engine went away again: checked at the next start, as everything else
        if problems := self.config.donate.beyond(machine):
            self._stop(
                "this machine donates more than it has: "
                + "; ".join(problems)
                + "; change [donate] in hostd's configuration and start hostd again"
            )
            return False
        return True

    async def _engine_facts_now(self) -> EngineFacts | None:
        """The engine's facts, or None (said to the member) when no engine answers."""
        try:
            return await asyncio.to_thread(self.driver.engine_facts)
        except DockerDriverError as exc:
            log.warning("hostd.engine_unavailable", url=self.config.docker_url, error=str(exc), hint=HINT)
            return None

    async def _engine_after_start(self) -> EngineFacts | None:
        """The machine registered without its engine (engine_at_start.py), reported away: keep
        the registration through reconnects, and ask the engine again with a backoff. Once it
        answers: the donation checked against the machine, the engine's facts registered, its
        return reported; its facts, or None when hostd stopped over the donation."""
        registered = asyncio.ensure_future(self._register_again_while_engine_away())
        try:
            facts = await self._wait_for_engine()
        finally:
            await cancel_until_done([registered])
        log.info("hostd.engine_answers", url=self.config.docker_url, version=facts.version)
        if not await self._donation_fits(facts):
            return None
        # Its facts registered before its return is reported: the host is schedulable again
        # with what the engine is, not with UNREAD_FACTS.
        await self._register(facts)
        self.containers.engine_at_start(True)
        return facts

    async def _register_again_while_engine_away(self) -> None:
        """A reconnect while waiting for the engine: registered again, and the engine's absence
        said again (JetStream may have lost it). The events and the sync wait for the engine."""
        while True:
            await self._resync.wait()
            self._resync.clear()
            await self._register(UNREAD_FACTS)
            self.containers.report_engine_again()

    async def _wait_for_engine(self) -> EngineFacts:
        waited: float | None = None
        attempt = 0
        while True:
            waited = next_wait(waited)
            await asyncio.sleep(waited)
            try:
                return await asyncio.to_thread(self.driver.engine_facts)
            except DockerDriverError as exc:
                attempt += 1
                if worth_saying(attempt):
                    log.warning(
                        "hostd.engine_unavailable",
                        url=self.config.docker_url,
                        error=str(exc),
                        hint=HINT,
                        retry_in=next_wait(waited),
                    )

    async def _request(self, subject: str, payload: bytes, timeout: float = 5.0) -> Reply:
        assert self.nc is not None
        msg = await self.nc.request(subject, payload, timeout=timeout)
        return Reply.model_validate_json(msg.data)

    async def _image_token(self, alloc_id: str, image: str) -> ImageToken | None:
        """The allocator's token to pull `image` for `alloc_id` from the pool registry; None: the image
        is from another registry (pulled anonymously)."""
        request = ImageTokenRequest(alloc_id=alloc_id, image=image)
        try:
            reply = await self._request(f"{IMAGE_TOKEN}.{self.host_id}", request.model_dump_json().encode())
        except _PEER_AWAY as exc:
            raise PullFailed(f"the allocator did not answer for a registry token ({exc!r})") from exc
        if reply.ok:
            return ImageToken.model_validate(reply.data)
        error = reply.error or {}
        code = str(error.get("code"))
        if code in ("NOT_IN_POOL_REGISTRY", "NO_POOL_REGISTRY"):
            return None
        raise PullFailed(
            f"the allocator refused a registry token: {error.get('message')}",
            permanent=code in ("NOT_YOUR_ALLOCATION", "NOT_ITS_IMAGE", "NOT_ITS_USERS", "NOT_ACTIVE"),
        )

    async def _register(self, facts: EngineFacts) -> None:
        request = RegisterHost(
            donated=self.config.placeable(),
            labels=self.config.labels,
            allowed_images=self.config.allowed_images,
            allow_network=self.config.allow_network,
            engine=facts,
            hostd_version=__version__,
            ssh_host_key=self.ssh_host_key,
            contract=CONTRACT_VERSION,
        )
        backoff = 0.5
        mismatch_backoff = CONTRACT_RETRY_FIRST_S

        async def ask_again(event: str, **fields: object) -> None:
            nonlocal backoff
            # Jittered: hosts turned away together (a registry restart, a crowd joining at once)
            # come back spread out rather than as the same crowd again.
            wait = backoff * random.uniform(0.5, 1.5)
            log.warning(event, **fields, retry_in=round(wait, 2))
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 10.0)

        while True:
            try:
                reply = await self._request(f"{REGISTER}.{self.host_id}", request.model_dump_json().encode())
            except _PEER_AWAY as exc:
                await ask_again("hostd.registry_unavailable", error=repr(exc))
                continue
            if not reply.ok:
                error = reply.error or {}
                if error.get("code") in PASSING_REFUSALS:
                    # The registry could not decide now (its database away, its view of the log
                    # behind, the host's stream changing under it): asked again, as when it does
                    # not answer, rather than ending hostd over a moment's trouble of the pool's.
                    await ask_again(
                        "hostd.registration_deferred", code=error.get("code"), error=error.get("message")
                    )
                    continue
                if error.get("code") == "NOT_ENROLLED":
                    raise HostdStopped(f"{error.get('message')}: run `potluck ops hosts enroll` first")
                if error.get("code") in FINAL_REFUSALS:
                    raise HostdStopped(f"{error.get('message')} ({error.get('code')})")
                if error.get("code") == BAD_LABELS:
                    # Asking again sends the same labels: only the member's configuration changes them.
                    raise HostdStopped(f"the registry refused this machine's labels: {error.get('message')}")
                if error.get("code") in ("SSH_KEY_TAKEN", "BAD_SSH_HOST_KEY"):
                    # The same key again would be refused again: the message says how to make another.
                    said = f"the registry refused this machine's SSH host key: {error.get('message')}"
                    raise HostdStopped(said)
                if error.get("code") == "CONTRACT_MISMATCH":
                    # Not final: the services' upgrade, which may be under way, lets it in. Until
                    # then nothing here is touched: no sync, no reports, what runs stays as it is.
                    log.error(
                        "hostd.contract_mismatch",
                        contract=CONTRACT_VERSION,
                        hint=error.get("message"),
                        retry_in=mismatch_backoff,
                    )
                    await asyncio.sleep(mismatch_backoff)
                    mismatch_backoff = min(mismatch_backoff * 2, CONTRACT_RETRY_MAX_S)
                    continue
                raise Rejected(str(error.get("code")), str(error.get("message")))
            self.admin = str(reply.data.get("admin", "active"))
            left = reply.data.get("drain_left_s")
            self.drain_left_s = float(left) if isinstance(left, int | float) else None
            self.images.resend()
            self.policy.resend()
            log.info("hostd.registered", host_id=self.host_id, admin=self.admin, donated=request.donated)
            return

    async def _snapshot(self) -> DesiredState:
        """A snapshot at least as new as every event already applied from the consumer."""
        backoff = 0.2
        while True:
            try:
                reply = await self._request(f"{DESIRED}.{self.host_id}", b"{}")
                if reply.ok:
                    snapshot = DesiredState.model_validate(reply.data)
                    if snapshot.position >= self.positions.last():
                        return snapshot
                else:
                    log.warning("hostd.snapshot_refused", error=reply.error)
            except ValidationError as exc:
                # An answer it cannot read is no outage: say which fields, and what to do.
                unknown = unknown_fields(exc)
                log.error(
                    "hostd.snapshot_unreadable",
                    unknown_fields=unknown,
                    error=str(exc),
                    hint=NEWER_POOL if unknown else MALFORMED_SNAPSHOT,
                    retry_in=backoff,
                )
            except _PEER_AWAY as exc:
                log.warning("hostd.allocator_unavailable", error=repr(exc), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _sync(self) -> None:
        # Until a snapshot arrives nothing is stopped: without it we cannot
        # tell work that should run from work that should not.
        snapshot = await self._snapshot()
        self.positions.advance(snapshot.position)
        if self.admin == "paused":
            self.containers.paused = True
        if self.admin == "draining" and self.drain_left_s is not None:
            # Drained before this hostd started (a reboot mid-drain): the grace goes on from
            # where it was, before the reconciliation adopts (or would start again) what runs.
            # (A registry older than drain_left_s does not say: then nothing is stopped.)
            await self.containers.drain(self.drain_left_s)
        await self.containers.set_desired(
            [(a.alloc_id, a.spec) for a in snapshot.allocations],
            kept=snapshot.kept,
            traces={a.alloc_id: a.trace for a in snapshot.allocations},
        )
        with contextlib.suppress(DockerDriverError):
            self.outbox.put_nowait(await self.containers.actual_state(snapshot.position))
        log.info(
            "hostd.synced",
            position=snapshot.position,
            desired=len(self.containers.desired),
            running=len(self.containers.containers),
        )

    async def _on_reconnect(self) -> None:
        if self._subscriber is not None:
            self._subscriber.wake()
        self._resync.set()

    async def _resync_after_reconnect(self, facts: EngineFacts) -> None:
        while True:
            await self._resync.wait()
            self._resync.clear()
            if self.admin == "deregistered":
                # Registering again would make the machine active: a reconnect or a wake-up is
                # not the member (or an operator) offering it again; a restart of hostd is.
                log.info(
                    "hostd.stays_deregistered",
                    host_id=self.host_id,
                    hint="restart hostd to offer the machine again",
                )
                continue
            await self._register(facts)
            self.containers.report_engine_again()
            await self._sync()

    async def _on_event(self, delivered: LoggedEvent) -> None:
        event = delivered.event
        match event:
            case AllocationPlaced(host_id=self.host_id):
                await self.containers.place(event.alloc_id, event.spec)
            # Its command exited and its user asked to keep the stopped container (files, logs).
            case AllocationExited(host_id=self.host_id, kept_until=until) if until is not None:
                await self.containers.keep(event.alloc_id, until)
            case AllocationDiscarded(host_id=self.host_id):
                await self.containers.discard(event.alloc_id)
            # Ended and logged (the allocator has freed its capacity too): the container's
            # exit code is on record, so its writable layer leaves the member's disk.
            case (
                AllocationReleased()
                | AllocationExpired()
                | AllocationLost()
                | AllocationExited()
                | AllocationFailed()
                | AllocationUnplaced()  # it could not get the image: placed elsewhere now
            ):
                if getattr(event, "host_id", None) == self.host_id:
                    if isinstance(event, AllocationLost):
                        # Given up while this machine was away (asleep or unreachable past the
                        # stranded grace): whatever still runs of it must stop now.
                        log.warning(
                            "hostd.stopping_given_up",
                            alloc_id=event.alloc_id,
                            reason=event.reason,
                            hint="the pool gave this work up (the machine away, deregistered or "
                            "revoked; `reason` says which); it is stopped here",
                        )
                    await self.containers.release(event.alloc_id)
            case HostConnectionsCapped(host_id=self.host_id):
                # The registry is about to take the key out of the users file (it closes this
                # connection too): the refusals until the cap ends are no revocation.
                why = (
                    f"this machine's NATS key held {event.connections} connections (a host may hold "
                    f"{event.limit}): the registry shut it out of NATS until {event.until.isoformat()}; "
                    "hostd reconnects then. Is something else using this machine's credentials?"
                )
                self.shut_out.noticed(event.for_s, why)
                log.warning("hostd.connections_capped", host_id=self.host_id, hint=why)
            case HostPaused():
                self.admin = "paused"
                await self.containers.pause_all()
            case HostResumed():
                self.admin = "active"
                await self.containers.resume_all()
            case HostDrainStarted():
                self.admin = "draining"
                await self.containers.drain(event.grace_s)
            case HostDeregistered():
                self.admin = "deregistered"
                stopping = len(self.containers.containers)
                await self.containers.release_all()
                # Said once, plainly: an operator's deregistration otherwise left the member a
                # hostd that went on running, idle, with nothing in its log saying why.
                log.warning(
                    "hostd.deregistered",
                    host_id=self.host_id,
                    by=event.by,
                    stopped=stopping,
                    hint=(
                        f"the {event.by} took this machine out of the pool: "
                        + (f"the pool's {stopping} container(s) here were stopped" if stopping else "")
                        + ("; " if stopping else "")
                        + "no work comes any more; restart hostd to offer the machine again, or "
                        "run `potluck host leave` to leave for good"
                    ),
                )
            case HostLeft() | HostRevoked() if event.host_id == self.host_id:
                # Out of the pool for good: nothing of the pool runs here any more.
                self.admin = "left" if isinstance(event, HostLeft) else "revoked"
                await self.containers.release_all()
                why = (
                    "this machine left the pool"
                    if isinstance(event, HostLeft)
                    else f"this machine was revoked by {event.by}"
                    + (f": {event.reason}" if event.reason else "")
                )
                self._stop(
                    f"{why}; ask an operator to enroll it again",
                    asked=isinstance(event, HostLeft) and event.by == "member",
                )

    async def _send_reports(self) -> None:
        """One sender, in order, retrying each report until JetStream has it."""
        assert self.nc is not None
        js = self.nc.jetstream()
        while True:
            report, context = await self.outbox.get()
            subject = report_subject(self.host_id, report)
            with publish_span(
                subject, parent=context, attributes={"potluck.report": report.kind}
            ) as trace_headers:
                await publish_until_stored(
                    js,
                    subject,
                    report.model_dump_json().encode(),
                    {"Nats-Msg-Id": report.report_id, **trace_headers},
                    kind=report.kind,
                )

    async def _beat(self) -> None:
        assert self.nc is not None
        interval = self.config.timing.heartbeat_interval_s
        while True:
            await self.sleep.awake.wait()  # announced asleep: a beat would say it is up
            beat = Heartbeat(hostd_version=__version__, containers=len(self.containers.containers))
            with contextlib.suppress(*TRANSIENT_BUS_ERRORS):
                await self.nc.publish(f"{HEARTBEAT}.{self.host_id}", beat.model_dump_json().encode())
            await asyncio.sleep(interval)


def _log_user_namespaces(facts: EngineFacts) -> None:
    """Say once, at start, whether root in a container is root on this machine: hardening
    narrows what such a root reaches, a user namespace takes the machine's root away."""
    if facts.user_namespaces == "off":
        log.warning(
            "hostd.engine_user_namespaces",
            user_namespaces=facts.user_namespaces,
            meaning="root in a container is root on this machine (hardened, not remapped)",
            hint="turn on userns-remap in the engine's daemon.json: README, Quick start: member",
        )
    else:
        log.info("hostd.engine_user_namespaces", user_namespaces=facts.user_namespaces)
