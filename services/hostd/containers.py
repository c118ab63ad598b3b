"""The containers of this host: desired against actual, kept in line with the engine.

Every Docker call runs off the event loop (the driver is synchronous), and
calls that change containers are serialised by one lock, so a placement, a
release and a reconciliation never interleave on the same container. The one
exception is a new placement's create and start, which run outside the lock, a
few at once (`place`): reconciliation leaves an allocation alone while its
start is under way, and a start that finds its allocation released meanwhile
removes what it made. An
engine that stops answering is a state hostd reports and waits out, never a
reason for hostd to stop.

A container that ended (exited, failed, stopped past its disk bound) keeps its
writable layer on the member's disk until the allocator has logged the end,
which is also when the allocator frees its capacity: the agent then calls
`release`. Until then the container still holds what a restarted hostd needs
to report it again (exit code, OOM flag). An allocation that asked to keep its
container (AllocationExited.kept_until) is `keep`-t instead: stopped, with its
files and logs, out of every other bookkeeping (quotas, pause, usage), neither
removed nor reported by reconciliation, until AllocationDiscarded (`discard`).

An interactive allocation (no command: its container runs the helper's keep-alive) is up
until it is released or expires. Its container stopping without hostd stopping it (the
engine restarted, the machine rebooted, the keep-alive killed) is therefore no end: hostd
starts the same container again, its files as they were and its limits read back
(`_start_again`), when the die event comes or at the reconciliation after the engine or
hostd is back; a few times in a window (restart_budget.py), after which its end is
reported as a task's would be.

An allocation whose image the engine lacks is not a failure at once: its
image is pulled (image_pull.py) in a task of its own, outside the lock, and
the container started when the pull is done; released meanwhile, the pull is
dropped. Only a pull that failed all its attempts fails the allocation.

With `warm_containers` set, a placement of a shape placed here lately takes a container
made ahead (warm_keeper.py) instead of creating one: only its limits are set, read back,
and it is unfrozen (its command run by the launcher, launcher.py). Warm containers are not
allocations: reconciliation and the reports leave them out (their names name no
allocation until one takes them).

Two holds may freeze the containers at once: the member's `pause` (HostPaused) and the
owner policy's freeze (policy_runner.py); they thaw only when neither holds. While the
policy throttles, each container's CPU quota is its part of the pool's share
(cpu_share.py), set again whenever a container starts or one leaves (released, kept after its
end, removed as unwanted): the share of one that left goes to the others; memory is never
changed.

Until the owner policy's first decision (`policy_decided`) a new hostd does not know what the
member's policy holds now: the containers an earlier hostd left frozen stay frozen, and
throttled ones throttled, whatever it adopts or restarts, and only a hold (the member's pause)
is added. A thaw or a full quota then would hand the pool the machine for the moment until the
policy decides, exactly when the member said no. The first decision is applied whole, each
container set to it, even where it is what a new manager assumes (running, full share).
Meanwhile the decision the hostd before it applied last (policy-status.json) stands in for one
(`remember_policy`): what this hostd starts (a new container, or one the engine's restart
stopped) or adopts running is paused if that froze, and a container it starts gets its part of
that share if it throttled; one adopted keeps the quota it has.

A container hostd would start again (an interactive one, stopped by the engine's restart) while
the pool is held (the member's pause, the owner policy's freeze) is not started: there is no
starting a container paused, and between the start and the pause that followed it ran, some
0.7 s, on the machine the member had said no to. It stays stopped (`_held_stopped`), counted
as up (as a paused one is) in what hostd reports, and is started again when the pool thaws.
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.engine import EngineFacts
from potluck.contracts.reports import (
    ActualState,
    ContainerExited,
    ContainerFailed,
    ContainerStarted,
    ContainerStatus,
    EngineStatus,
    FailureReason,
    PreviousExit,
    Report,
    StopReason,
    UsageSample,
    UsageSampled,
)
from potluck.events.tracing import continuing
from potluck.hostd.config import HostdConfig
from potluck.hostd.container_config import ContainerSpec, files_bound, log_beside_disk
from potluck.hostd.cpu_share import spread
from potluck.hostd.disk_bound import (
    SOONEST_MEASURE_S,
    disk_overrun,
    entries_most,
    measure_now,
    needs_layer_measured,
    next_measure_in,
    written_bytes,
)
from potluck.hostd.docker_driver import (
    STOP_SIGNALS,
    ContainerNotFound,
    DockerDriver,
    DockerDriverError,
    EngineUnavailable,
    ImageNotAvailable,
    LimitsNotApplied,
    ManagedContainer,
)
from potluck.hostd.image_pull import ImagePuller, PullFailed
from potluck.hostd.layer_walks import LayerWalks
from potluck.hostd.reconciler import never_started, reconcile
from potluck.hostd.restart_budget import RestartBudget
from potluck.hostd.shared_details import named_by, without_local_addresses
from potluck.hostd.spans import docker_span
from potluck.hostd.unwatched_stops import stopped_unwatched
from potluck.hostd.warm_keeper import WarmKeeper
from potluck.hostd.write_activity import WriteSource, WriteWatch, read_written, write_source
from potluck.kernel.background import BackgroundTasks
from potluck.kernel.sizes import format_size

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Placements started at once: enough for the engine to work on several containers side by
#: side, few enough not to crowd a member's machine with engine calls.
START_CONCURRENCY = 4

#: While the engine's event stream is open, the engine is pinged this seldom: the stream ends
#: when the engine goes away, so a ping every few seconds would tell nothing new; the rare one
#: is for an engine that hangs with its socket open.
ENGINE_CHECK_WHILE_STREAMING_S = 30.0

#: A stopped interactive container the engine refused to start is asked again after this.
RESTART_RETRY_S = 2.0

#: The reconciliation on the engine's return waits this long first: an engine shutting down
#: answers some calls and fails others for a second or two, and without the pause each call
#: that failed was followed by one that found the engine "back" and a new reconciliation
#: (some 150 of each, and as many engine reports, in 2 s of one engine's shutdown).
ENGINE_RETURN_SETTLE_S = 0.5


def container_spec(host_id: str, alloc_id: str, spec: AllocationSpec) -> ContainerSpec:
    return ContainerSpec(
        allocation_id=alloc_id,
        host_id=host_id,
        image=spec.image,
        cpus=spec.resources.cpus,
        memory_bytes=spec.resources.memory_bytes,
        disk_bytes=spec.resources.disk_bytes,
        pids_limit=spec.pids_limit,
        command=spec.command,
        env=dict(spec.env),
        network=spec.network,
    )


class ContainerManager:
    def __init__(
        self,
        config: HostdConfig,
        driver: DockerDriver,
        report: Callable[[Report], None],
        puller: ImagePuller | None = None,
    ) -> None:
        self.config = config
        self.puller = puller
        # Allocations whose image is being pulled (no container yet), with the pull's task.
        self.pulls: dict[str, asyncio.Task[None]] = {}
        self.host_id = config.host_id
        self.driver = driver
        self.report = report
        self.desired: dict[str, ContainerSpec] = {}
        #: The trace contexts of placements a snapshot brought (not their events), until started.
        self._placement_traces: dict[str, Mapping[str, str]] = {}
        self.containers: dict[str, str] = {}  # alloc_id -> container id
        self.paused = False
        #: The owner policy: froze the pool, and the CPUs the pool keeps (None: its full share).
        self.policy_frozen = False
        self.policy_share_cpus: float | None = None
        #: Whether the owner policy has decided since this manager was made: until then what an
        #: earlier hostd left frozen or throttled is left so (see the module's note).
        self.policy_decided = False
        #: Interactive containers stopped (by the engine's restart) while the pool was held, and not
        #: started again until it thaws (see the module's note), by allocation.
        self._held_stopped: dict[str, ManagedContainer] = {}
        # The CPU quota last set on each container (alloc_id -> cpus), so that only changes go out.
        self._quotas: dict[str, float] = {}
        #: Paused by the log bound (log_cost.py) because their output cost the member's engine
        #: more than their cap; never while the member's pause or the owner policy holds them.
        self.log_held: set[str] = set()
        #: Until when (monotonic) the log bound lets each allocation run: a session is opening.
        self._log_grace: dict[str, float] = {}
        #: Whether a session is open in a container (the exec bridge's ledger): the log bound
        #: does not pause it then. A transfer's stream is carried by the same shim and dockerd,
        #: and a pause mid-transfer left an scp of 100 MB hanging for good.
        self.in_session: Callable[[str], bool] = lambda container_id: False
        self.engine_up: bool | None = None
        #: What was said of the engine when it went away (said again after a reconnect).
        self._engine_detail = ""
        #: Since when watch_docker_events holds an open event stream of the engine (None: it
        #: holds none): what ended before was not watched (unwatched_stops.py).
        self._watched_since: datetime | None = None
        #: From when the next event stream asks the engine for what it missed (its `since`):
        #: this manager's making, then each stream's end. Without it a container that died
        #: before the stream opened was never reported (a short task placed on a hostd just
        #: started, seen in CI: its die came before the first stream's request was answered).
        self._follow_from = time.time()
        self._reconcile_on_return: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Placements whose start is under way (place), and the slots they take turns in.
        self._starts: dict[str, asyncio.Task[None]] = {}
        #: Of those, the ones released (or dropped by a snapshot) meanwhile.
        self._unwanted_starts: set[str] = set()
        self._start_slots = asyncio.Semaphore(START_CONCURRENCY)
        # Allocations whose container we stop ourselves, with the failure to report instead of an exit.
        self._stopping: dict[str, FailureReason] = {}
        #: Allocations whose container the drain stopped: their exit says so, for their users.
        self._drained: set[str] = set()
        #: How often each interactive allocation's container was started again lately.
        self._restarts = RestartBudget()
        #: Tasks that must outlive the call that made them (a reference keeps them alive).
        self._background = BackgroundTasks()
        self._drain_task: asyncio.Task[None] | None = None
        #: The drain's grace is over: no interactive container is started again here.
        self._drain_over = False
        #: When the drain under way stops what still runs (time.monotonic()).
        self._drain_ends = 0.0
        #: Containers the engine was told to stop (a `kill` event: SIGTERM or SIGKILL) and that
        #: have not died since. Whether the stop was hostd's own, the die decides: a released,
        #: failed or drained allocation is told apart by hostd's bookkeeping, and what is left
        #: was stopped on the host outside Potluck.
        self._told_to_stop: set[str] = set()
        #: Ended allocations whose stopped containers are kept, with until when (None: a restarted
        #: hostd learnt of it from a snapshot, which does not say). Changed in place: the exec
        #: side reads it to tell a session into a kept container what still works.
        self.kept: dict[str, datetime | None] = {}
        #: Containers created ahead; None when `warm_containers` is 0 or the engine is not
        #: Docker's (the hollow one of scale tests).
        self.warm: WarmKeeper | None = None
        #: The last count of each container's layer entries (layer_walks.py).
        self._walks = LayerWalks()
        #: Each measured container's: is its log beside its disk bound (made by an older hostd:
        #: container_config.log_beside_disk)? Read once from its inspect.
        self._log_beside: dict[str, bool] = {}
        #: Where each measured container's writes are counted between its measures, by container
        #: id (write_activity.py); None where they cannot be read here: measured on its clock alone.
        self._write_sources: dict[str, WriteSource | None] = {}
        #: What each container wrote since its last measure, by alloc_id, from those counts.
        self._writes = WriteWatch()
        #: Said once: the writes of this engine's containers are not read (why in the log).
        self._writes_unwatched_said = False
        #: Wakes the disk guard: a container started, to be measured and its writes read now
        #: rather than up to a regular interval later, in which it could fill its bound unseen.
        self._guard_wake = asyncio.Event()
        self._warm_emptied: asyncio.Task[None] | None = None
        if config.warm_containers > 0 and isinstance(driver, DockerDriver):
            self.warm = WarmKeeper(driver, self.host_id, config.warm_containers, self._disk_free)

    def _disk_free(self) -> int:
        """The donated disk no allocation placed here reserves."""
        reserved = sum(spec.disk_bytes for spec in self.desired.values())
        return self.config.placeable().disk_bytes - reserved

    async def _docker(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread; what it shows of the engine noted (`_engine_state`). Only a
        call the engine answered shows it up: one answered from the driver's memory (the
        engine's facts, read once) would otherwise report a crashed engine back at every disk
        check, and start a reconciliation against it each time."""
        before = self.driver.answers()
        try:
            result = await asyncio.to_thread(fn, *args)
        except EngineUnavailable:
            self._engine_state(False, "the Docker engine stopped answering")
            raise
        if self.driver.answers() != before:
            self._engine_state(True)
        return result

    def _engine_state(self, up: bool, detail: str = "", *, reconcile: bool = True) -> None:
        if self.engine_up is not up:
            came_back = up and self.engine_up is False
            self.engine_up = up
            self._engine_detail = detail
            if came_back and reconcile:
                # Whichever call finds the engine back (a ping, the event stream reopening, a
                # start) sets this, so the reconciliation is started here and not by the ping
                # alone, which would miss the return another call noticed first.
                self._reconcile_on_return = asyncio.create_task(self._reconcile_after_return())
            (log.info if up else log.error)(
                "hostd.engine", available=up, url=self.driver.base_url, detail=detail
            )
            self.report(EngineStatus(available=up, detail=detail))

    def engine_at_start(self, up: bool, detail: str = "") -> None:
        """Note and report the engine's state as hostd starts (engine_at_start.py): away when it
        did not answer, then up once it does. Its return starts no reconciliation: hostd's
        start-up reconciles after it, against the allocator's snapshot, and one before that
        snapshot would take every container here for undesired."""
        self._engine_state(up, detail, reconcile=False)

    def report_engine_again(self) -> None:
        """Say again what was last said of the engine (after a reconnect: JetStream may have
        lost it, and the registry records the host's engine away or back from it)."""
        if self.engine_up is not None:
            detail = "" if self.engine_up else self._engine_detail
            self.report(EngineStatus(available=self.engine_up, detail=detail))

    async def _reconcile_after_return(self) -> None:
        await asyncio.sleep(ENGINE_RETURN_SETTLE_S)
        await self.reconcile()

    def _fail(self, alloc_id: str, reason: FailureReason, detail: str, *, shared: bool = False) -> None:
        """Report the allocation failed. Its user reads `detail`, without the member's addresses
        (shared_details.py; the member's log has it whole), unless it is `shared` already: its
        writer took them out, knowing which of its words are whose."""
        log.warning("hostd.container_failed", alloc_id=alloc_id, reason=reason, detail=detail)
        spec = self.desired.pop(alloc_id, None)
        if not shared:
            detail = without_local_addresses(detail, named=named_by(spec.image) if spec is not None else ())
        self.report(ContainerFailed(alloc_id=alloc_id, reason=reason, detail=detail[:2000]))

    # What the allocator wants.

    def env_of(self, alloc_id: str) -> Mapping[str, str]:
        """The environment values of an allocation placed here ({} for one not, or no more)."""
        spec = self.desired.get(alloc_id)
        return spec.env if spec is not None else {}

    def disk_bound_of(self, alloc_id: str) -> int | None:
        """The disk bound of an allocation placed here, from the spec hostd was sent (None for
        one not placed here, or no more): the exec side's SFTP server holds writes to it. What
        its files may take: its disk less its output log's part (ContainerSpec.writable_bytes),
        or all of it for a container an older hostd made, whose log is beside it."""
        spec = self.desired.get(alloc_id)
        return self._files_bound(self.containers.get(alloc_id), spec)[0] if spec is not None else None

    def _files_bound(self, container_id: str | None, spec: ContainerSpec) -> tuple[int, int]:
        """What the container's files may take, and its log's part of the disk besides
        (container_config.files_bound): a container not read yet is held to this hostd's."""
        return files_bound(spec, log_beside=self._log_beside.get(container_id or "", False))

    async def disk_used(self, alloc_id: str) -> int | None:
        """What the allocation's container wrote, counted as the disk guard counts it (its layer,
        each of its entries where the engine has no quota, the engine's files outside it:
        disk_bound.py), so that the transfers hostd serves (disk_budget.py) count down from the
        same figure the guard holds to the bound; the layer is measured even where a quota bounds
        it, since a transfer must fit what is left under the quota too. None for an allocation
        with no container here, or when the engine does not say."""
        container_id = self.containers.get(alloc_id)
        spec = self.desired.get(alloc_id)
        if container_id is None or spec is None:
            return None
        try:
            facts = await self._docker(self.driver.engine_facts)
            layer, outside, entries = await self._disk_written(
                alloc_id, container_id, spec, facts, exact=True
            )
        except DockerDriverError:
            return None
        return written_bytes(layer, outside, entries)

    async def set_desired(
        self,
        wanted: list[tuple[str, AllocationSpec]],
        kept: Iterable[str] = (),
        traces: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Replace the desired set and the kept one (from a snapshot) and bring the engine in line.
        `traces`: the placements' trace contexts, in which their containers are started here."""
        self._placement_traces = dict(traces or {})
        known = dict(self.kept)
        self.kept.clear()
        self.kept.update({alloc_id: known.get(alloc_id) for alloc_id in kept})
        desired: dict[str, ContainerSpec] = {}
        # What this hostd already holds is admitted first: when the whole no longer fits the
        # donation (the member lowered it), what is refused is what has not started here yet.
        held = set(self.desired) | set(self.containers)
        for alloc_id, spec in sorted(wanted, key=lambda w: w[0] not in held):
            built = self._admit(alloc_id, spec, desired)
            if built is not None:
                desired[alloc_id] = built
        self.desired = desired
        self._unwanted_starts.update(a for a in self._starts if a not in desired)
        for alloc_id in [a for a in self.pulls if a not in desired]:
            self._stop_pull(alloc_id)
        await self.reconcile()

    def _admit(
        self, alloc_id: str, spec: AllocationSpec, placed: Mapping[str, ContainerSpec]
    ) -> ContainerSpec | None:
        """The container to run for the allocation, or None when this host refuses it (reported
        failed, saying why). `placed`: what else the host holds, which with it must fit the donation."""
        if not self.config.image_allowed(spec.image):
            self._fail(
                alloc_id,
                "image_not_allowed",
                f"image {spec.image!r} is not in this host's allowed_images {self.config.allowed_images}",
            )
            return None
        if spec.network and not self.config.allow_network:
            # The scheduler never sends one here; an allocation placed before the member
            # changed the setting, or by a bug, still gets no network.
            self._fail(
                alloc_id,
                "network_not_allowed",
                "the allocation asks for a network; this host's allow_network is false",
            )
            return None
        if beyond := self._beyond_donation(alloc_id, spec, placed):
            self._fail(alloc_id, "beyond_donation", beyond, shared=True)
            return None
        try:
            return container_spec(self.host_id, alloc_id, spec)
        except ValueError as exc:
            self._fail(alloc_id, "invalid_spec", str(exc))
            return None

    def _beyond_donation(
        self, alloc_id: str, spec: AllocationSpec, placed: Mapping[str, ContainerSpec]
    ) -> str:
        """Why the allocation with the others placed here would take more than the member donates
        ("" when it fits). The allocator never places past the donation; this holds the member's
        caps against one that does (a bug, or a donation lowered under running work), as
        allowed_images is held. Kept containers are left out: the allocator counts their disk,
        so what fits its books fits these."""
        others = [s for a, s in placed.items() if a != alloc_id]
        donated = self.config.placeable()
        wants = spec.resources
        over = []
        cpus = sum(s.cpus for s in others) + wants.cpus
        if cpus > donated.cpus + 1e-9:
            over.append(f"{cpus:g} CPUs of the {donated.cpus:g} donated")
        memory = sum(s.memory_bytes for s in others) + wants.memory_bytes
        if memory > donated.memory_bytes:
            over.append(f"{format_size(memory)} of the {format_size(donated.memory_bytes)} of memory donated")
        disk = sum(s.disk_bytes for s in others) + wants.disk_bytes
        if disk > donated.disk_bytes:
            over.append(f"{format_size(disk)} of the {format_size(donated.disk_bytes)} of disk donated")
        if not over:
            return ""
        return (
            f"placed past this host's donation: with the {len(others)} allocation(s) it holds it would "
            f"take {', '.join(over)}; the host refuses it"
        )

    async def place(self, alloc_id: str, spec: AllocationSpec) -> None:
        """Start the allocation's container in a task of its own, and return at once: the
        placements of a job arrive together, and the engine creates a few containers side by
        side far sooner than one after another (bench/README.md, `jobs`)."""
        built = self._admit(alloc_id, spec, self.desired)
        if built is None:
            return
        self.desired[alloc_id] = built
        if alloc_id in self._starts:
            return
        task = asyncio.create_task(self._start_placed(built))
        self._starts[alloc_id] = task
        task.add_done_callback(lambda done: self._started_or_not(alloc_id, done))

    def _started_or_not(self, alloc_id: str, task: "asyncio.Task[None]") -> None:
        if self._starts.get(alloc_id) is task:
            del self._starts[alloc_id]
            self._unwanted_starts.discard(alloc_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("hostd.start_crashed", alloc_id=alloc_id, error=repr(task.exception()))

    async def _start_placed(self, spec: ContainerSpec) -> None:
        """One placement's start: the engine's create and start outside the lock (so several go
        at once, at most START_CONCURRENCY), the bookkeeping under it. Reconciliation leaves an
        allocation alone while its start is under way (`_starts`)."""
        alloc_id = spec.allocation_id
        async with self._start_slots:
            if self.desired.get(alloc_id) != spec or alloc_id in self.containers:
                return  # released (or started by a reconciliation) while it waited
            container_id = await self._create(spec)
            if container_id is None:
                return
            async with self._lock:
                if alloc_id in self._unwanted_starts:
                    # Released while the engine started it: it must not run on.
                    log.info(
                        "hostd.removing_released_start", alloc_id=alloc_id, container_id=container_id[:12]
                    )
                    with contextlib.suppress(DockerDriverError):
                        await self._docker(self.driver.remove, container_id)
                    return
                if alloc_id in self.kept:
                    return  # it exited at once, its end is on record, and its container is kept
                # (Exited at once and not kept: as any exit, its end being logged releases it.)
                await self._started(spec, container_id)

    async def release(self, alloc_id: str) -> None:
        """The allocation is over here (released, expired, lost, or its end logged): remove
        its container and writable layer. An engine that is away keeps the container until
        the next reconciliation, which removes what no allocation wants."""
        self.desired.pop(alloc_id, None)
        if alloc_id in self._starts:
            self._unwanted_starts.add(alloc_id)
        self._stop_pull(alloc_id)
        async with self._lock:
            # The engine's forced remove of a paused container can fail ("tried to kill
            # container, but did not receive an exit event"): what the log bound paused runs first.
            await self._log_release_locked(alloc_id)
            self._log_grace.pop(alloc_id, None)
            container_id = self.containers.pop(alloc_id, None) or f"potluck-{alloc_id}"
            self._quotas.pop(alloc_id, None)
            self._stopping.pop(alloc_id, None)
            self._drained.discard(alloc_id)
            self._restarts.forget(alloc_id)
            self._held_stopped.pop(alloc_id, None)
            await self._remove_released_locked(alloc_id, container_id)
            # While throttled, its part of the share goes back to the containers left (after
            # the removal: raised before, the pool would run past its share meanwhile).
            await self._apply_quotas_locked()

    async def _remove_released_locked(self, alloc_id: str, container_id: str) -> None:
        try:
            await self._docker(self.driver.remove, container_id)
        except ContainerNotFound:
            return
        except DockerDriverError as exc:
            log.warning("hostd.remove_failed", alloc_id=alloc_id, error=str(exc))
            return
        log.info("hostd.container_removed", alloc_id=alloc_id, container_id=container_id[:12])

    async def release_all(self) -> None:
        if self.warm is not None:
            await self.warm.empty()
        for alloc_id in list(self.desired) + list(self.containers) + list(self.kept):
            self.kept.pop(alloc_id, None)
            await self.release(alloc_id)

    async def stop_all_cut_off(self) -> int:
        """The pool no longer accepts this machine (its key refused: revoked while hostd was
        away, or cut off before the revocation's event arrived) and hostd stops for good: stop
        every container of the pool here, so that nothing of it goes on using the member's
        CPUs and memory with no hostd to hold it to the owner policy. Their allocations are
        given up in the log already; their files stay (a refusal by mistake, put right, costs
        the work its processes, not its files). Returns how many were running."""
        try:
            found = await asyncio.to_thread(self.driver.list_managed, self.host_id)
        except DockerDriverError as exc:
            log.warning("hostd.cut_off_stop_failed", error=str(exc))
            return 0
        stopped = 0
        for container in found:
            if not container.running:
                continue
            try:
                if container.status == "paused":  # frozen by a pause or the owner policy
                    await asyncio.to_thread(self.driver.unpause, container.container_id)
                await asyncio.to_thread(self.driver.stop, container.container_id, 10)
            except DockerDriverError as exc:
                log.warning(
                    "hostd.cut_off_stop_failed", container_id=container.container_id[:12], error=str(exc)
                )
                continue
            stopped += 1
            log.info(
                "hostd.cut_off_stopped",
                alloc_id=container.allocation_id,
                container_id=container.container_id[:12],
            )
        return stopped

    async def keep(self, alloc_id: str, until: datetime) -> None:
        """The allocation ended and its stopped container is kept until `until` (for its files and
        logs): out of the running set, not removed."""
        self.desired.pop(alloc_id, None)
        self._stop_pull(alloc_id)
        async with self._lock:
            self.kept[alloc_id] = until
            self.containers.pop(alloc_id, None)
            self._held_stopped.pop(alloc_id, None)
            self._quotas.pop(alloc_id, None)
            self._stopping.pop(alloc_id, None)
            # Its container runs no more: while throttled, its part of the share is the others'.
            await self._apply_quotas_locked()
        log.info("hostd.container_kept", alloc_id=alloc_id, until=until.isoformat())

    async def discard(self, alloc_id: str) -> None:
        """A kept container's time is up (or its user released it): remove it now."""
        self.kept.pop(alloc_id, None)
        await self.release(alloc_id)

    def _stop_pull(self, alloc_id: str) -> None:
        task = self.pulls.pop(alloc_id, None)
        if task is not None:
            task.cancel()
            log.info("hostd.image_pull_dropped", alloc_id=alloc_id)

    def _begin_pull(self, spec: ContainerSpec) -> None:
        if spec.allocation_id not in self.pulls:
            self.pulls[spec.allocation_id] = asyncio.create_task(self._pull_then_start(spec))

    async def _pull_then_start(self, spec: ContainerSpec) -> None:
        alloc_id = spec.allocation_id
        assert self.puller is not None
        try:
            try:
                await self.puller.pull(alloc_id, spec.image)
            except PullFailed as exc:
                if self.desired.get(alloc_id) == spec:
                    self._fail(alloc_id, "image_pull_failed", str(exc), shared=True)  # image_pull's
                return
            async with self._lock:
                # Out of `pulls` only under the lock: actual_state, which takes it, then sees
                # the allocation pulling or with its container, never between the two.
                self._pull_ended(alloc_id)
                if self.desired.get(alloc_id) == spec:
                    await self._start(spec, pulled=True)
        finally:
            self._pull_ended(alloc_id)

    def _pull_ended(self, alloc_id: str) -> None:
        if self.pulls.get(alloc_id) is asyncio.current_task():
            del self.pulls[alloc_id]

    async def _start(self, spec: ContainerSpec, *, pulled: bool = False) -> None:
        """Create and start the container, under the lock."""
        container_id = await self._create(spec, pulled=pulled)
        if container_id is not None:
            await self._started(spec, container_id)

    async def _create(self, spec: ContainerSpec, *, pulled: bool = False) -> str | None:
        """The engine's create and start; None when it did not start (reported, or to be
        pulled first, or the engine is away)."""
        alloc_id = spec.allocation_id
        try:
            container_id = None
            if self.warm is not None and not pulled:
                with docker_span("take-warm+start", alloc_id=alloc_id, image=spec.image) as span:
                    container_id = await self._warm_take(spec)
                    if container_id is not None:
                        span.set_attribute("container.id", container_id)
            if container_id is None:
                with docker_span("create+start", alloc_id=alloc_id, image=spec.image) as span:
                    container_id = await self._docker(self.driver.run, spec)
                    span.set_attribute("container.id", container_id)
        except EngineUnavailable:
            return None  # stays desired; started when the engine answers again
        except ImageNotAvailable as exc:
            if self.puller is None or pulled:
                self._fail(alloc_id, "image_not_available", str(exc))
            else:
                self._begin_pull(spec)
            return None
        except LimitsNotApplied as exc:
            self._fail(alloc_id, "limits_not_applied", str(exc))
            return None
        except DockerDriverError as exc:
            self._fail(alloc_id, "start_failed", str(exc))
            return None
        return container_id

    async def _warm_take(self, spec: ContainerSpec) -> str | None:
        assert self.warm is not None
        try:
            container_id = await self.warm.take(spec)
        except EngineUnavailable:
            self._engine_state(False, "the Docker engine stopped answering")
            raise
        if container_id is not None:
            self._engine_state(True)
        return container_id

    async def _started(
        self, spec: ContainerSpec, container_id: str, restarted_after: PreviousExit | None = None
    ) -> None:
        """Bookkeeping of a container the engine started (`restarted_after`: again, after it
        had stopped so), under the lock."""
        alloc_id = spec.allocation_id
        self.containers[alloc_id] = container_id
        self._write_sources.pop(container_id, None)  # its processes are new: found again
        self._guard_wake.set()
        if self.held:
            await self._set_frozen(alloc_id, container_id, True)
        # Created now, or found as an earlier hostd left it (perhaps throttled): set its quota,
        # and while throttled, everyone's part of the share again; before the policy's first
        # decision, of the remembered share, raising none (_apply_quotas_locked).
        self._quotas.pop(alloc_id, None)
        await self._apply_quotas_locked(started=alloc_id)
        log.info("hostd.container_started", alloc_id=alloc_id, container_id=container_id[:12])
        self.report(
            ContainerStarted(alloc_id=alloc_id, container_id=container_id, restarted_after=restarted_after)
        )

    async def reconcile(self) -> None:
        """Bring the engine in line with the desired set. An engine that goes away midway
        ends this round; `watch_engine` reconciles again when it answers."""
        async with self._lock:
            with contextlib.suppress(EngineUnavailable):
                await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        # An allocation whose start is under way is its start's business: its container may be
        # created and not started yet, which would otherwise read as "never started".
        # Warm containers not taken name no allocation: the warm keeper's, not reconciliation's.
        actual = [
            c
            for c in await self._docker(self.driver.list_managed, self.host_id)
            if c.allocation_id and c.allocation_id not in self._starts
        ]
        desired = {a: spec for a, spec in self.desired.items() if a not in self._starts}
        no_restart = self._drained | self._stopping.keys() | (desired.keys() if self._drain_over else set())
        plan = reconcile(desired, actual, self.kept, no_restart=no_restart)
        for container in plan.remove:
            log.info(
                "hostd.removing_unwanted",
                alloc_id=container.allocation_id,
                container_id=container.container_id[:12],
            )
            try:
                await self._docker(self.driver.remove, container.container_id)
            except ContainerNotFound:
                pass
            except EngineUnavailable:
                raise
            except DockerDriverError as exc:
                log.warning("hostd.remove_failed", alloc_id=container.allocation_id, error=str(exc))
            if self.containers.get(container.allocation_id) == container.container_id:
                del self.containers[container.allocation_id]
                self._quotas.pop(container.allocation_id, None)
        for container in plan.adopt:
            self.containers[container.allocation_id] = container.container_id
            log.info(
                "hostd.adopted",
                alloc_id=container.allocation_id,
                container_id=container.container_id[:12],
            )
            # A hostd that restarted does not know which quota it left: set it again.
            self._quotas.pop(container.allocation_id, None)
            try:
                if self.held and container.status != "paused":
                    await self._docker(self.driver.pause, container.container_id)
                elif not self.held and container.status == "paused" and self.policy_decided:
                    await self._docker(self.driver.unpause, container.container_id)
            except EngineUnavailable:
                raise
            except DockerDriverError as exc:
                log.warning("hostd.pause_state_not_set", alloc_id=container.allocation_id, error=str(exc))
        for container in plan.report_never_started:
            # Kept until the failure is logged, like any ended container; it never ran, so
            # starting it now would run work the allocator may already count as ended.
            self._fail(
                container.allocation_id,
                "start_failed",
                f"container {container.container_id[:12]} was created but never started "
                "(hostd stopped between creating and starting it); the work did not run",
            )
        for container in plan.report_exited:
            self._exited(container)
        for container in plan.restart:
            await self._start_again(container)
        for spec in plan.start:
            with continuing(self._placement_traces.pop(spec.allocation_id, None)):
                await self._start(spec)
        if plan.adopt or plan.remove:
            # Adopted ones get their quota; what removed ones held of a throttled share is the
            # others' again.
            await self._apply_quotas_locked()
        if self.warm is not None:
            self.warm.refill_soon()

    async def actual_state(self, as_of_position: int) -> ActualState:
        """What runs here, for allocations placed up to `as_of_position`, which this hostd has
        applied: each has its container, or its start or pull under way (`pulling`), or its
        failure reported. Under the lock, so that no reconciliation is half-way through."""
        # A container that never started has no exit to report; its allocation's failure is
        # reported by the reconciliation, and a missing container is judged a failure too.
        # Nor has a kept one anything to report: its end is on record.
        async with self._lock:
            listed = await self._docker(self.driver.list_managed, self.host_id)
            # No container yet, and not missing: its image is coming, or its start is under way.
            pending = sorted({*self.pulls, *self._starts})
            held_stopped = {c.container_id for c in self._held_stopped.values()}
        containers = [
            c for c in listed if c.allocation_id and not never_started(c) and c.allocation_id not in self.kept
        ]
        return ActualState(
            as_of_position=as_of_position,
            containers=[
                ContainerStatus(
                    alloc_id=c.allocation_id,
                    container_id=c.container_id,
                    # Held stopped: up, as a paused one would be (see the module's note).
                    running=c.running or c.container_id in held_stopped,
                    exit_code=c.exit_code,
                    oom_killed=c.oom_killed,
                )
                for c in containers
            ],
            pulling=pending,
        )

    # The member's controls. Pause and drain replace each other, as the registry records them
    # (one admin state): a pause takes a drain's grace back, and a drain thaws a pause so that
    # what runs can finish within its grace. Each alone would leave the registry saying one
    # thing while this host did the other, until a hostd restart did what the registry said.

    async def pause_all(self) -> None:
        """Freezes the containers; a drain under way no longer stops them (its grace is taken
        back, and warm containers stay emptied until `resume_all`)."""
        self._take_back_drain()
        await self._hold(paused=True)

    async def resume_all(self) -> None:
        self._take_back_drain()
        if self._warm_emptied is not None:  # a drain taken back: warm containers are made again
            emptied, self._warm_emptied = self._warm_emptied, None
            self._background.start(self._warm_again(emptied), "warm-again")
        await self._hold(paused=False)

    def _take_back_drain(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        self._drain_over = False

    async def _hold(self, *, paused: bool) -> None:
        """Sets the member's pause; containers freeze or thaw only where that changes whether
        they are held (the owner policy may hold them frozen as well)."""
        was_held = self.held
        self.paused = paused
        if self.held != was_held:
            async with self._lock:
                await self._set_all_frozen_locked()

    # The owner policy.

    @property
    def held(self) -> bool:
        """Frozen by the member's pause, the owner policy, or both."""
        return self.paused or self.policy_frozen

    def remember_policy(self, *, frozen: bool, share_cpus: float | None) -> None:
        """The decision the hostd before this one applied last (its policy-status.json), held
        to until the owner policy's first decision replaces it whole (see the module's note).
        Before any reconciliation: it decides what the first one pauses and what quota a
        container it starts gets."""
        if self.policy_decided:
            return
        self.policy_frozen = frozen
        self.policy_share_cpus = None if frozen else share_cpus

    async def set_policy(self, *, frozen: bool, share_cpus: float | None) -> None:
        """Freeze or thaw the pool, and give each container its part of `share_cpus`
        (None: each its full request). Thawing waits for the member's pause too. The first
        call sets every container, whatever a new manager would have assumed of it."""
        first = not self.policy_decided
        was_held = self.held
        self.policy_frozen = frozen
        self.policy_share_cpus = None if frozen else share_cpus
        async with self._lock:
            self.policy_decided = True
            if not frozen:
                # Before any thaw below: a container an earlier hostd froze and throttled,
                # thawed to be throttled, never runs a moment on its full quota.
                await self._apply_quotas_locked()
            if first:
                await self._match_frozen_locked()
            elif self.held != was_held:
                await self._set_all_frozen_locked()

    async def _set_all_frozen_locked(self) -> None:
        if not self.held and not self.policy_decided:
            return  # what an earlier hostd froze stays so until the owner policy decides
        for alloc_id, container_id in list(self.containers.items()):
            if self.held and alloc_id in self.log_held:
                continue  # paused already, by the log bound: the member's or the policy's now
            await self._set_frozen(alloc_id, container_id, self.held)
        # Whatever the log bound held is held, or thawed, by the member or the policy now.
        self.log_held.clear()
        await self._start_held_stopped_locked()

    async def _start_held_stopped_locked(self) -> None:
        """The pool thawed: start again what its hold kept stopped (see the module's note)."""
        if self.held:
            return
        for alloc_id, stopped in list(self._held_stopped.items()):
            del self._held_stopped[alloc_id]
            # An engine away now: the reconciliation on its return starts it, the pool thawed.
            with contextlib.suppress(EngineUnavailable):
                await self._start_again(stopped)

    async def _match_frozen_locked(self) -> None:
        """Pause or unpause each container whose state in the engine is not what the holds
        say: the first decision, which finds containers as an earlier hostd left them (a pause
        asked of a paused container is refused, and would be logged as a failure)."""
        try:
            found = await self._docker(self.driver.list_managed, self.host_id)
        except DockerDriverError as exc:
            log.warning(
                "hostd.pause_state_not_set",
                error=str(exc),
                hint="set again when the engine next reconciles this host's containers",
            )
            return
        paused = {c.container_id for c in found if c.status == "paused"}
        for alloc_id, container_id in list(self.containers.items()):
            if self.held and alloc_id in self.log_held:
                continue
            if self.held != (container_id in paused):
                await self._set_frozen(alloc_id, container_id, self.held)
        self.log_held.clear()
        await self._start_held_stopped_locked()

    # The log bound (log_cost.py): it decides, these apply, under the lock.

    async def hold_for_logs(self, alloc_id: str, container_id: str, hold: bool) -> bool:
        """Pause (`hold`) or unpause a container for its output's cost; True when a hold
        began. Nothing is done to a container the member or the owner policy holds, one being
        stopped, or one a session is open or opening in."""
        if hold and self.in_session(container_id):
            hold = False
        if hold == (alloc_id in self.log_held) and not self.held:
            return False  # nothing changes: the lock (every tick, every container) is not taken
        async with self._lock:
            if (
                self.held
                # Paused as found may be the policy's freeze: the log bound neither adds a hold
                # it would later lift nor lifts one, until the policy has decided.
                or not self.policy_decided
                or self.containers.get(alloc_id) != container_id
                or alloc_id in self._stopping
                or alloc_id in self._drained
            ):
                self.log_held.discard(alloc_id)
                return False
            if hold and time.monotonic() < self._log_grace.get(alloc_id, 0.0):
                hold = False
            if hold == (alloc_id in self.log_held):
                return False
            try:
                await self._docker(self.driver.pause if hold else self.driver.unpause, container_id)
                if hold and (
                    time.monotonic() < self._log_grace.get(alloc_id, 0.0) or self.in_session(container_id)
                ):
                    # A session began while the pause was on its way (let_run saw nothing held
                    # yet): it runs. From here to log_held's update nothing awaits, so a later
                    # let_run finds the hold and ends it.
                    await self._docker(self.driver.unpause, container_id)
                    return False
            except DockerDriverError as exc:
                log.warning("hostd.log_bound_not_set", alloc_id=alloc_id, paused=hold, error=str(exc))
                return False
            if hold:
                self.log_held.add(alloc_id)
            else:
                self.log_held.discard(alloc_id)
            return hold

    def cpu_cap(self, alloc_id: str) -> float | None:
        """The CPUs the allocation may use now: its quota as last set (the owner policy may
        have lowered it), else what it asked for; None for one not wanted here."""
        spec = self.desired.get(alloc_id)
        if spec is None:
            return None
        return self._quotas.get(alloc_id, spec.cpus)

    async def let_run(self, alloc_id: str, for_s: float = 3.0) -> None:
        """A session is opening in the allocation's container: the log bound unpauses it now
        and leaves it running for `for_s` (the engine refuses an exec into a paused container)."""
        self._log_grace[alloc_id] = time.monotonic() + for_s
        if alloc_id in self.log_held:  # else no lock: a start under way holds it for seconds
            async with self._lock:
                await self._log_release_locked(alloc_id)

    async def _log_release_locked(self, alloc_id: str) -> None:
        """Unpause what the log bound holds of `alloc_id` (before a stop, or for a session)."""
        if alloc_id not in self.log_held:
            return
        self.log_held.discard(alloc_id)
        container_id = self.containers.get(alloc_id)
        if container_id is not None:
            with contextlib.suppress(DockerDriverError):
                await self._docker(self.driver.unpause, container_id)

    async def _set_frozen(self, alloc_id: str, container_id: str, frozen: bool) -> None:
        """Pause or unpause one container. One the engine could not change (it tried again
        already: pause_races.py) is logged, not left unsaid; the next reconciliation sets it."""
        await self._changed_or_logged(
            self.driver.pause if frozen else self.driver.unpause,
            container_id,
            event="hostd.pause_state_not_set",
            hint="set again when the engine next reconciles this host's containers",
            alloc_id=alloc_id,
            paused=frozen,
        )

    async def _changed_or_logged(
        self, change: Callable[..., object], *args: Any, event: str, hint: str, **about: Any
    ) -> bool:
        """One change to a container that hostd goes on without when the engine refuses it:
        the refusal is logged as `event` with `about` and what happens next (`hint`)."""
        try:
            await self._docker(change, *args)
        except DockerDriverError as exc:
            log.warning(event, **about, error=str(exc), hint=hint)
            return False
        return True

    async def _apply_quotas_locked(self, started: str | None = None) -> None:
        """Give each container its part of the policy's share. Before the policy's first
        decision, of the share remembered (remember_policy), and only when a container starts
        (`started`): it gets its part, and those whose quota this hostd set get theirs where it
        is lower; nothing is raised, and one adopted keeps the quota it was found with."""
        if not self.policy_decided and (started is None or self.policy_share_cpus is None):
            # An earlier hostd may have throttled what is found: its quota stays until the
            # policy decides (a container started without a remembered share: its full request).
            return
        requested = {a: self.desired[a].cpus for a in self.containers if a in self.desired}
        for alloc_id, cpus in spread(requested, self.policy_share_cpus).items():
            last = self._quotas.get(alloc_id)
            if last == cpus:
                continue
            if not self.policy_decided and alloc_id != started and (last is None or cpus > last):
                continue
            set_now = await self._changed_or_logged(
                self.driver.update_cpus,
                self.containers[alloc_id],
                cpus,
                event="hostd.quota_not_set",
                hint="set again at the next policy change, or when a container starts or leaves",
                alloc_id=alloc_id,
                cpus=cpus,
            )
            if not set_now:
                continue
            self._quotas[alloc_id] = cpus
            log.info("hostd.quota_set", alloc_id=alloc_id, cpus=cpus)

    def quotas(self) -> dict[str, float]:
        """The CPU quota each container has now, as last set."""
        return dict(self._quotas)

    async def drain(self, grace_s: float) -> None:
        """No new work comes (the allocator sees the drain); what runs gets `grace_s` to finish,
        from now, thawed if the member had paused it. Called again while a drain waits, the
        end that comes first stands: the member may cut a grace short, and a drain delivered
        again (later, so ending later) changes nothing."""
        await self._hold(paused=False)
        if self.warm is not None and self._warm_emptied is None:
            self._warm_emptied = asyncio.create_task(self.warm.empty())
        if grace_s <= 0:
            self._drain_over = True  # before a reconciliation could start a stopped one again
        ends = time.monotonic() + grace_s
        if self._drain_task is not None and not self._drain_task.done():
            if ends >= self._drain_ends:
                return
            self._drain_task.cancel()  # still in its grace: it has stopped nothing yet
        self._drain_ends = ends
        self._drain_task = asyncio.create_task(self._stop_after(grace_s))

    async def _stop_after(self, grace_s: float) -> None:
        await asyncio.sleep(grace_s)
        self._drain_over = True
        log.info("hostd.drain_grace_over", containers=len(self.containers))
        async with self._lock:
            for alloc_id, stopped in list(self._held_stopped.items()):
                # Stopped already, so no die comes: its end, the drain's, is reported now.
                del self._held_stopped[alloc_id]
                self._drained.add(alloc_id)
                self._exited(stopped)
            for alloc_id, container_id in list(self.containers.items()):
                self._drained.add(alloc_id)
                await self._log_release_locked(alloc_id)  # a paused container does not stop
                with contextlib.suppress(DockerDriverError):
                    await self._docker(self.driver.stop, container_id, 10)

    # Watching.

    async def on_container_died(self, container_id: str) -> None:
        # The engine, not our bookkeeping, says whose container it was (by its name): a
        # container may die before run() has even returned its id to us.
        try:
            state = await self._docker(self.driver.state, container_id)
        except EngineUnavailable:
            return  # the next reconciliation reports it (and whether it was told to stop)
        except DockerDriverError:
            self._told_to_stop.discard(container_id)
            return  # gone
        try:
            await self._died(state)
        finally:
            self._told_to_stop.discard(container_id)  # whatever this die was, that stop is spent

    async def _died(self, state: ManagedContainer) -> None:
        alloc_id = state.allocation_id
        start = self._starts.get(alloc_id) if alloc_id is not None else None
        if start is not None:
            # Its start is still being recorded (limits read back, quota set): a short command
            # can end before that. Its exit goes after ContainerStarted, so that the log says
            # it ran (and for how long) before it ended.
            await asyncio.wait([start])
        if state.running or alloc_id not in self.desired:
            return  # restarted, or released by us
        if alloc_id in self._stopping:
            del self._stopping[alloc_id]
            self.desired.pop(alloc_id, None)
            return  # reported as a failure when we stopped it
        if state.keeps_alive and alloc_id not in self._drained and not self._drain_over:
            async with self._lock:
                # An engine going away is waited out: the reconciliation on its return starts it.
                with contextlib.suppress(EngineUnavailable):
                    await self._start_again(state)
            return
        self._exited(state)

    def _exited(self, container: ManagedContainer, why: StopReason | None = None) -> None:
        """Its container ended: the allocation is no longer wanted here, and its end is reported
        (`why`: the host's reason, for its user; a drain's stop says so whatever `why`)."""
        alloc_id = container.allocation_id
        self.desired.pop(alloc_id, None)
        log.info(
            "hostd.container_exited",
            alloc_id=alloc_id,
            exit_code=container.exit_code,
            oom_killed=container.oom_killed,
        )
        if alloc_id in self._drained or (self._drain_over and container.keeps_alive):
            # An interactive container ends only when stopped: once the grace is over, by the
            # drain, though this hostd restarted between stopping it and reporting it.
            self._drained.discard(alloc_id)
            why = "host_drained"
        elif why is None and (
            container.container_id in self._told_to_stop or stopped_unwatched(container, self._watched_since)
        ):
            why = "stopped_on_host"  # not by hostd: its own stops are in its bookkeeping
        self._told_to_stop.discard(container.container_id)
        self.report(
            ContainerExited(
                alloc_id=alloc_id,
                container_id=container.container_id,
                exit_code=container.exit_code or 0,
                oom_killed=container.oom_killed,
                stopped_by_host=why,
            )
        )

    async def _start_again(self, stopped: ManagedContainer) -> None:
        """Start an interactive allocation's stopped container again, under the lock (see the
        module's note); past its restart budget, or refused by the engine, its end is reported.
        EngineUnavailable: the engine is away, and the reconciliation on its return does this."""
        alloc_id, container_id = stopped.allocation_id, stopped.container_id
        spec = self.desired.get(alloc_id)
        if spec is None or alloc_id in self._drained or alloc_id in self._stopping:
            return  # released, drained or stopped by us while this waited for the lock
        if self._drain_over:
            self._exited(stopped)  # the drain's grace ran out meanwhile: it stays stopped
            return
        refused: DockerDriverError | None = None
        try:
            if (await self._docker(self.driver.state, container_id)).running:
                return  # started already (the reconciliation and the die event both saw it stop)
        except ContainerNotFound:
            return  # removed by hand: the reconciliation starts the allocation a new one
        except EngineUnavailable:
            raise
        except DockerDriverError as exc:
            refused = exc  # asked again below, within the budget like any start
        if self.held:
            # Not started while held: there is no starting it paused, and it would run until the
            # pause that followed (see the module's note). Not a restart: the budget is not spent.
            if alloc_id not in self._held_stopped:
                log.info(
                    "hostd.restart_held",
                    alloc_id=alloc_id,
                    container_id=container_id[:12],
                    hint="stopped while the pool is held (the member's pause or the owner "
                    "policy's freeze): started again when it thaws",
                )
            self._held_stopped[alloc_id] = stopped
            self.containers.pop(alloc_id, None)  # neither paused nor unpaused: it is stopped
            self._quotas.pop(alloc_id, None)
            return
        if not self._restarts.allow(alloc_id, time.monotonic()):
            log.warning(
                "hostd.restarts_exhausted",
                alloc_id=alloc_id,
                times=self._restarts.times,
                window_s=self._restarts.window_s,
                hint="its container keeps stopping: its end is reported; see the engine's log",
            )
            self._exited(stopped, "kept_stopping")
            return
        if refused is not None:
            self._retry_start_again(stopped, refused)
            return
        try:
            await self._docker(self.driver.start_again, container_id, spec)
        except EngineUnavailable:
            raise
        except LimitsNotApplied as exc:
            self._fail(alloc_id, "limits_not_applied", str(exc))
            return
        except DockerDriverError as exc:
            self._retry_start_again(stopped, exc)
            return
        log.warning(
            "hostd.container_restarted",
            alloc_id=alloc_id,
            container_id=container_id[:12],
            exit_code=stopped.exit_code,
            oom_killed=stopped.oom_killed,
            hint="an interactive allocation stays up until released or expired: its stopped "
            "container (engine restarted, machine rebooted, keep-alive ended) runs again, files kept",
        )
        previous = PreviousExit(exit_code=stopped.exit_code or 0, oom_killed=stopped.oom_killed)
        await self._started(spec, container_id, restarted_after=previous)

    def _retry_start_again(self, stopped: ManagedContainer, error: DockerDriverError) -> None:
        """Ask the engine again in a moment: one shutting down refuses starts for a while before
        it stops answering. Each try counts against the restart budget, so an engine that keeps
        refusing ends the allocation (its exit reported) after a few."""
        alloc_id = stopped.allocation_id
        log.warning("hostd.restart_failed", alloc_id=alloc_id, error=str(error), retry_in_s=RESTART_RETRY_S)

        async def again() -> None:
            await asyncio.sleep(RESTART_RETRY_S)
            async with self._lock:
                with contextlib.suppress(EngineUnavailable):  # the reconciliation on its return
                    await self._start_again(stopped)

        self._background.start(again(), f"start-again-{alloc_id}")

    async def _warm_again(self, emptied: "asyncio.Task[None]") -> None:
        await asyncio.wait([emptied])  # its removals done first (or failed): no refill races them
        if self.warm is not None and self._warm_emptied is None:
            self.warm.want_again()

    async def watch_docker_events(self) -> None:
        """Follows the engine's die events in a thread; restarts the stream after an engine outage."""
        loop = asyncio.get_running_loop()
        while True:
            # A second earlier than the last stream's end: the engine counts `since` in whole
            # seconds, and a die seen twice is read once (on_container_died asks the engine).
            since = int(self._follow_from) - 1
            try:
                stream = await self._docker(self.driver.events, self.host_id, since)
            except EngineUnavailable:
                await asyncio.sleep(1.0)
                continue
            # None marks the stream's end: the loop sleeps on the queue alone, with no timer to
            # look for the end (a wake-up a second per host was a measurable share of an idle
            # hostd's CPU, and most of thousands of hollow hosts').
            died: asyncio.Queue[str | None] = asyncio.Queue()

            def pump(stream: Any = stream, died: asyncio.Queue[str | None] = died) -> None:
                try:
                    for event in stream:
                        if not event["container_id"]:
                            continue
                        container_id = str(event["container_id"])
                        if event["action"] == "die":
                            loop.call_soon_threadsafe(died.put_nowait, container_id)
                        elif event["action"] == "kill" and event["signal"] in STOP_SIGNALS:
                            loop.call_soon_threadsafe(self._told_to_stop.add, container_id)
                except DockerDriverError:
                    pass
                finally:
                    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                        loop.call_soon_threadsafe(died.put_nowait, None)

            # A daemon thread, not the loop's executor: a read blocked on the
            # engine's socket must not hold up the process at exit.
            threading.Thread(target=pump, name="docker-events", daemon=True).start()
            self._watched_since = datetime.now(UTC)
            try:
                while (container_id := await died.get()) is not None:
                    await self.on_container_died(container_id)
            finally:
                self._follow_from = time.time()
                self._watched_since = None
                stream.close()
            await asyncio.sleep(1.0)

    async def watch_engine(self, interval: float = 2.0) -> None:
        """Notices the engine going away and coming back (`_engine_state` reconciles when it
        returns): a ping every `interval`, or every ENGINE_CHECK_WHILE_STREAMING_S while the
        engine's event stream is open and would end if the engine went away."""
        last_ping = -float("inf")
        while True:
            streaming = self._watched_since is not None and self.engine_up
            if not streaming or time.monotonic() - last_ping >= ENGINE_CHECK_WHILE_STREAMING_S:
                last_ping = time.monotonic()
                with contextlib.suppress(DockerDriverError):
                    await self._docker(self.driver.ping)
            await asyncio.sleep(interval)

    async def guard_disk(self) -> None:
        """Measure what each container wrote (disk_bound.py says what counts: its layer, which
        an engine's quota may bound instead, and the engine's files outside it) and stop what
        wrote past its bound. Each container is measured on its own clock: first when it
        starts (or the guard first sees it), then every interval, sooner while it writes
        toward its bound (next_measure_in), and at once when what it wrote since its last
        measure, read every SOONEST_MEASURE_S without the engine (write_activity.py), could
        take it past its bound (measure_now)."""
        regular = self.config.timing.disk_check_interval_s
        measured: dict[str, tuple[float, int]] = {}  # alloc_id -> (when, bytes written then)
        due: dict[str, float] = {}  # alloc_id -> when it is measured next
        sooner: set[str] = set()  # measured sooner than the regular interval, toward their bound
        while True:
            now = time.monotonic()
            wake = min([now + regular, *due.values()])
            if any(self._write_sources.values()):
                # Only while a container's writes are read: an idle hostd, or one whose
                # engine's processes it cannot see, is not woken every second.
                wake = min(wake, now + SOONEST_MEASURE_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - now)):
                    await self._guard_wake.wait()
            self._guard_wake.clear()
            now = time.monotonic()
            for alloc_id in due.keys() - self.containers.keys():
                del due[alloc_id]
                measured.pop(alloc_id, None)
                sooner.discard(alloc_id)
            self._walks.keep_only(self.containers.values())
            self._writes.keep_only(self.containers.keys())
            for gone in self._log_beside.keys() - set(self.containers.values()):
                del self._log_beside[gone]
            for gone in self._write_sources.keys() - set(self.containers.values()):
                del self._write_sources[gone]
            for alloc_id in self.containers.keys() - due.keys():
                due[alloc_id] = now  # seen for the first time: measured now
            self._read_writes(measured, due, now)
            ready = [alloc_id for alloc_id, at in due.items() if at <= now]
            if not ready:
                continue  # nothing placed here: not even the engine is asked
            for alloc_id in ready:
                due[alloc_id] = now + regular  # unless measured below
            try:
                facts = await self._docker(self.driver.engine_facts)
            except DockerDriverError:
                continue  # reported by _docker; measured again once the engine answers
            for alloc_id in ready:
                container_id = self.containers.get(alloc_id)
                spec = self.desired.get(alloc_id)
                if container_id is None or spec is None:
                    log.debug("hostd.disk_not_measured", alloc_id=alloc_id, why="no container or spec now")
                    continue
                try:
                    if container_id not in self._log_beside or container_id not in self._write_sources:
                        attrs = await self._docker(self.driver.inspect, container_id)
                        self._log_beside[container_id] = log_beside_disk(attrs)
                        # Before the measure: what it writes from then on is read.
                        self._write_sources[container_id] = self._find_write_source(
                            alloc_id, container_id, attrs
                        )
                    bound, log_part = self._files_bound(container_id, spec)
                    layer, outside, entries = await self._disk_written(alloc_id, container_id, spec, facts)
                    overrun = disk_overrun(layer, outside, bound, entries=entries, log_part=log_part)
                    if overrun is not None:
                        # Its entries may be an earlier count (layer_walks.py): a stop is decided
                        # on a count of now, so that files removed since are not held against it.
                        layer, outside, entries = await self._disk_written(
                            alloc_id, container_id, spec, facts, exact=True
                        )
                        overrun = disk_overrun(layer, outside, bound, entries=entries, log_part=log_part)
                except DockerDriverError as exc:
                    log.debug("hostd.disk_not_measured", alloc_id=alloc_id, why=str(exc))
                    if alloc_id in sooner and not isinstance(exc, EngineUnavailable):
                        # On its way to its bound: asked again soon, not a regular interval
                        # later, in which it could write past its bound and back unseen.
                        due[alloc_id] = now + min(regular, SOONEST_MEASURE_S)
                    continue
                if overrun is not None:
                    await self._stop_for(alloc_id, container_id, "disk_limit_exceeded", overrun)
                    continue
                at, used = time.monotonic(), written_bytes(layer, outside, entries)
                before = measured.get(alloc_id)
                measured[alloc_id] = (at, used)
                self._writes.measured(alloc_id)
                if before is None or at <= before[0]:
                    continue
                rate = (used - before[1]) / (at - before[0])
                wait = next_measure_in(used=used, rate=rate, bound=bound, regular_s=regular)
                # From the round's start, not this measure's: containers measured together stay
                # together, one wake-up for all of them rather than one each.
                due[alloc_id] = now + wait
                if wait >= regular:
                    sooner.discard(alloc_id)
                else:
                    sooner.add(alloc_id)
                    log.debug(
                        "hostd.disk_measured_sooner",
                        alloc_id=alloc_id,
                        used=used,
                        bound=bound,
                        bytes_per_s=round(rate),
                        in_s=round(wait, 2),
                    )

    def _find_write_source(
        self, alloc_id: str, container_id: str, attrs: dict[str, Any]
    ) -> WriteSource | None:
        """Where the container's writes are counted (write_activity.py), its count read once to
        start from; None, said once in the log, where they cannot be read here."""
        pid = int((attrs.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            return None  # not running: nothing writes (found again if it starts)
        if not self.driver.base_url.startswith("unix://"):
            found: WriteSource | str = "the engine is not on this machine"
        else:
            found = write_source(container_id, pid)
        if isinstance(found, str):
            if not self._writes_unwatched_said:
                self._writes_unwatched_said = True
                log.info(
                    "hostd.disk_writes_unwatched",
                    why=found,
                    meaning="a container that writes in a burst after a quiet spell is measured at its "
                    "next regular disk check (disk_check_interval_s): it can write that long past its bound",
                )
            return None
        count = read_written(found)
        if count is None:
            return None  # ended meanwhile: found again if it starts (_started)
        self._writes.read(alloc_id, count)
        return found

    def _read_writes(
        self, measured: Mapping[str, tuple[float, int]], due: dict[str, float], now: float
    ) -> None:
        """Read what each container wrote since its last measure (write_activity.py; files, not
        the engine) and make it due now where that could take it past its bound (measure_now)."""
        for alloc_id, container_id in self.containers.items():
            source = self._write_sources.get(container_id)
            if source is None:
                continue
            count = read_written(source)
            if count is None:
                # Stopped, or started again with other processes: found anew at its next measure.
                del self._write_sources[container_id]
                self._writes.restart(alloc_id)
                continue
            since = self._writes.read(alloc_id, count)
            spec = self.desired.get(alloc_id)
            last = measured.get(alloc_id)
            if spec is None or last is None or due.get(alloc_id, now) <= now or self.engine_up is False:
                continue
            bound = self._files_bound(container_id, spec)[0]
            if measure_now(used=last[1], written_since=since, bound=bound):
                due[alloc_id] = now
                log.debug(
                    "hostd.disk_measured_on_writes", alloc_id=alloc_id, used=last[1], since=since, bound=bound
                )

    async def _disk_written(
        self,
        alloc_id: str,
        container_id: str,
        spec: ContainerSpec,
        facts: EngineFacts,
        *,
        exact: bool = False,
    ) -> tuple[int, dict[str, int], int]:
        """What the container wrote, as the disk guard counts it (disk_bound.py): its writable
        layer's bytes (measured when `exact`, else only where the guard needs them), the
        engine's files outside the layer, and its layer's entries where the engine has no quota
        (counted now when `exact`, else the last count while it stands: layer_walks.py).
        DockerDriverError when the engine does not say."""
        if facts.disk_quota_supported:
            outside = await self._docker(self.driver.outside_layer_bytes, container_id)
            held = 0
        else:
            # Files deleted while held open are on the disk and in no walk of the layer; a quota
            # counts their blocks itself (held_files.py).
            outside, held = await self._docker(self.driver.outside_and_held_bytes, container_id)
        written = entries = 0
        if exact or needs_layer_measured(engine_quota=facts.disk_quota_supported, outside=outside):
            written = await self._docker(self.driver.writable_layer_bytes, container_id)
        if not facts.disk_quota_supported:
            written += held
            # The engine's SizeRw leaves out directories and empty files; a quota counts their
            # blocks itself (disk_bound.py).
            entries = await self._layer_entries(alloc_id, container_id, written, outside, spec, recount=exact)
        return written, outside, entries

    async def _layer_entries(
        self,
        alloc_id: str,
        container_id: str,
        layer: int,
        outside: dict[str, int],
        spec: ContainerSpec,
        *,
        recount: bool,
    ) -> int:
        """The entries of the container's layer, as many as need counting (disk_bound.py): the
        last count while it stands, unless `recount` (layer_walks.py); 0 with a warning when an
        engine that answers will not list a container's changes, so that its bytes are still
        held to the bound."""
        started = time.monotonic()
        if not recount:
            standing = self._walks.standing(container_id, started)
            if standing is not None:
                return standing
        most = entries_most(layer, outside, self._files_bound(container_id, spec)[0])
        try:
            entries = await self._docker(self.driver.layer_entries, container_id, most)
        except (EngineUnavailable, ContainerNotFound):
            raise
        except DockerDriverError as exc:
            log.warning(
                "hostd.layer_entries_unknown",
                alloc_id=alloc_id,
                error=str(exc),
                hint="the engine did not list the container's changes: its files and directories "
                "are not counted against its disk bound this time, its bytes still are",
            )
            return 0
        ended = time.monotonic()
        self._walks.counted(
            container_id,
            entries,
            started=started,
            ended=ended,
            regular_s=self.config.timing.disk_check_interval_s,
            containers=len(self.containers),
        )
        seconds = round(ended - started, 3)
        log.debug("hostd.layer_counted", alloc_id=alloc_id, entries=entries, seconds=seconds)
        return entries

    async def _stop_for(self, alloc_id: str, container_id: str, reason: FailureReason, detail: str) -> None:
        self._stopping[alloc_id] = reason
        self._fail(alloc_id, reason, detail)
        async with self._lock:
            await self._log_release_locked(alloc_id)  # a paused container does not stop
            with contextlib.suppress(DockerDriverError):
                await self._docker(self.driver.stop, container_id, 5)

    async def sample_usage(self) -> None:
        while True:
            await asyncio.sleep(self.config.timing.usage_interval_s)
            samples = []
            for alloc_id, container_id in list(self.containers.items()):
                try:
                    usage = await self._docker(self.driver.usage, container_id)
                except DockerDriverError:
                    continue
                samples.append(
                    UsageSample(
                        alloc_id=alloc_id,
                        cpu_total_ns=usage.cpu_total_ns,
                        memory_bytes=usage.memory_bytes,
                        pids=usage.pids,
                    )
                )
            if samples:
                self.report(UsageSampled(samples=samples))
