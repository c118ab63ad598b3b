"""The Allocation aggregate's reactions to what hosts report: pure decisions.

A report is trusted only for allocations placed on the reporting host (the
host id comes from the NATS subject its permissions allow). When an
allocation leaves the active states its host capacity is freed in the same
append.

A host that could not get the image (`image_pull_failed`, after its own
retries) sends the allocation back to be placed on another host
(AllocationUnplaced, its capacity freed), until MAX_PULL_HOSTS hosts have
failed it: then it fails, naming each host's reason.

An allocation whose command exited on its own, and whose spec asks to keep
its container (`keep_for_s` > 0), ends with AllocationExited(kept_until =
now + keep_for_s): its host keeps the stopped container for its files and
logs, and only its disk stays reserved (CapacityRetained instead of
CapacityFreed) until it is discarded (kept.py). Every other end frees all.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from potluck.contracts.allocation_events import (
    AllocationExited,
    AllocationFailed,
    AllocationPulling,
    AllocationPullProgressed,
    AllocationRestarted,
    AllocationRunning,
    AllocationUnplaced,
    CapacityFreed,
    CapacityRetained,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.reports import (
    ActualState,
    AnyReport,
    ContainerExited,
    ContainerFailed,
    ContainerPulling,
    ContainerStarted,
    StopReason,
)
from potluck.events import Event, PoisonMessage
from potluck.readmodels.allocations import ACTIVE, STARTING, AllocationState, PullFailure

#: Pull progress is logged at most this often per allocation: enough to watch, not a flood of events.
PULL_PROGRESS_EVERY = timedelta(seconds=5)
#: ... and that often only while it moves by PULL_PROGRESS_STEP of what the image announced;
#: less, at most every PULL_PROGRESS_SLOW. A pull that trickles (a few bytes a second, for
#: hours) logged an event every 5 s of its life, each saying almost nothing new.
PULL_PROGRESS_STEP = 0.01
PULL_PROGRESS_SLOW = timedelta(seconds=60)
#: A failed pull sends the allocation to another host, on at most this many hosts in all: an
#: image no host can get fails after a bounded number of tries instead of going round the pool.
MAX_PULL_HOSTS = 3
#: The one report reason that sends an allocation to another host: the image, not the
#: allocation, was the trouble there, and another host may get it.
PULL_FAILED = "image_pull_failed"


@dataclass(frozen=True)
class Decision:
    """Events per stream, to append together; `expected` holds the alloc stream's version."""

    alloc_id: str
    alloc_events: list[Event]
    host_id: str | None = None
    capacity_events: list[Event] | None = None
    expected: int = 0

    @property
    def streams(self) -> dict[str, list[Event]]:
        streams: dict[str, list[Event]] = {alloc_stream(self.alloc_id): self.alloc_events}
        if self.capacity_events and self.host_id:
            streams[capacity_stream(self.host_id)] = self.capacity_events
        return streams


def _check_host(state: AllocationState | None, alloc_id: str, host_id: str) -> AllocationState:
    if state is None:
        raise PoisonMessage(f"host {host_id} reported on unknown allocation {alloc_id}")
    if state.host_id != host_id:
        raise PoisonMessage(f"host {host_id} reported on allocation {alloc_id}, which is not placed there")
    return state


def ended(state: AllocationState, host_id: str, event: Event) -> Decision:
    """An active allocation ends with `event` (or leaves the host, AllocationUnplaced), and its
    reservation there is freed."""
    freed: list[Event] = [
        CapacityFreed(host_id=host_id, alloc_id=state.alloc_id, amount=state.spec.resources)
    ]
    return Decision(state.alloc_id, [event], host_id, freed, state.version)


#: What its user reads when its host stopped it (ContainerExited.stopped_by_host).
STOPPED_BY_HOST: dict[StopReason, str] = {
    "host_drained": "host drained",
    "kept_stopping": "its host could not keep its container running (started again too often)",
    "stopped_on_host": "stopped on its host (by its member, or its Docker engine stopped)",
}
#: The stops that take the machine from under the work: its command did nothing wrong
#: (kept_stopping is the container's own repeated dying).
TAKEN_BACK: frozenset[StopReason] = frozenset({"host_drained", "stopped_on_host"})


def exited(
    state: AllocationState,
    host_id: str,
    exit_code: int,
    oom_killed: bool,
    now: datetime,
    stopped_by_host: StopReason | None = None,
) -> Decision:
    """The allocation's command exited (on its own, or its host stopped it): it ends, its
    stopped container kept for its spec's keep_for_s (only its disk still reserved) or,
    without one, removed."""
    keep_for_s = state.spec.keep_for_s
    kept_until = now + timedelta(seconds=keep_for_s) if keep_for_s > 0 else None
    event = AllocationExited(
        alloc_id=state.alloc_id,
        host_id=host_id,
        exit_code=exit_code,
        oom_killed=oom_killed,
        kept_until=kept_until,
        reason=STOPPED_BY_HOST[stopped_by_host] if stopped_by_host is not None else None,
        by_host=stopped_by_host in TAKEN_BACK,
    )
    if kept_until is None:
        return ended(state, host_id, event)
    retained: list[Event] = [
        CapacityRetained(host_id=host_id, alloc_id=state.alloc_id, disk_bytes=state.spec.resources.disk_bytes)
    ]
    return Decision(state.alloc_id, [event], host_id, retained, state.version)


def tried_hosts(failures: tuple[PullFailure, ...]) -> str:
    """Each host the image could not be got on, and why, for a failure's detail."""
    return "; ".join(f"host {f.host_id}: {f.detail or f.reason}" for f in failures)


def pull_failed_everywhere(
    state: AllocationState, failures: tuple[PullFailure, ...], host_id: str | None = None
) -> AllocationFailed:
    """The end of an allocation whose image no host it was tried on could get."""
    return AllocationFailed(
        alloc_id=state.alloc_id,
        host_id=host_id,
        reason=PULL_FAILED,
        detail=f"no host could get the image {state.spec.image!r}: {tried_hosts(failures)}",
    )


def pull_failed(state: AllocationState, host_id: str, report: ContainerFailed) -> Decision:
    """The host could not get the image: place the allocation elsewhere, or fail it when
    MAX_PULL_HOSTS hosts have tried."""
    failure = PullFailure(host_id=host_id, reason=report.reason, detail=report.detail)
    failures = (*state.pull_failures, failure)
    unplaced = AllocationUnplaced(
        alloc_id=state.alloc_id, host_id=host_id, reason=report.reason, detail=report.detail
    )
    decision = ended(state, host_id, unplaced)
    if len(failures) < MAX_PULL_HOSTS:
        return decision
    # It leaves this host like the others (its history and `failed_on` name every host),
    # and fails in the same append.
    failed = pull_failed_everywhere(state, failures, host_id)
    return replace(decision, alloc_events=[unplaced, failed])


def pulling(
    current: AllocationState, host_id: str, report: ContainerPulling, now: datetime
) -> Decision | None:
    """The first pull report makes the allocation `pulling`; later ones are logged as progress,
    throttled to PULL_PROGRESS_EVERY (and once more when the pull has all it announced)."""
    if current.status == "placed":
        started = AllocationPulling(
            alloc_id=current.alloc_id,
            host_id=host_id,
            image=current.spec.image,
            done_bytes=report.done_bytes,
            total_bytes=report.total_bytes,
        )
        return Decision(current.alloc_id, [started], expected=current.version)
    if current.status != "pulling":
        return None  # running already, or ended: a late report
    if (report.done_bytes, report.total_bytes) == (current.pull_done_bytes, current.pull_total_bytes):
        return None
    complete = report.total_bytes > 0 and report.done_bytes >= report.total_bytes
    # Once more when complete, but once: a host reporting "complete" at a new size each time
    # bypassed the throttle with every report, and logged one event each.
    logged_complete = (current.pull_total_bytes or 0) > 0 and (current.pull_done_bytes or 0) >= (
        current.pull_total_bytes or 0
    )
    last = current.pull_logged_at
    if (not complete or logged_complete) and last is not None:
        moved = report.done_bytes - (current.pull_done_bytes or 0)
        grew = report.total_bytes != (current.pull_total_bytes or 0)
        step = grew or moved >= PULL_PROGRESS_STEP * report.total_bytes
        if now - last < (PULL_PROGRESS_EVERY if step else PULL_PROGRESS_SLOW):
            return None
    progressed = AllocationPullProgressed(
        alloc_id=current.alloc_id,
        host_id=host_id,
        done_bytes=report.done_bytes,
        total_bytes=report.total_bytes,
    )
    return Decision(current.alloc_id, [progressed], expected=current.version)


def decide(
    state: AllocationState | None, host_id: str, report: AnyReport, *, now: datetime | None = None
) -> Decision | None:
    match report:
        case ContainerPulling():
            current = _check_host(state, report.alloc_id, host_id)
            return pulling(current, host_id, report, now or datetime.now(UTC))
        case ContainerStarted():
            current = _check_host(state, report.alloc_id, host_id)
            previous = report.restarted_after
            if current.status == "running" and previous is not None:
                restarted = AllocationRestarted(
                    alloc_id=current.alloc_id,
                    host_id=host_id,
                    container_id=report.container_id,
                    exit_code=previous.exit_code,
                    oom_killed=previous.oom_killed,
                )
                return Decision(current.alloc_id, [restarted], expected=current.version)
            if current.status not in STARTING:
                return None
            running = AllocationRunning(
                alloc_id=current.alloc_id, host_id=host_id, container_id=report.container_id
            )
            return Decision(current.alloc_id, [running], expected=current.version)
        case ContainerExited():
            current = _check_host(state, report.alloc_id, host_id)
            if current.status not in ACTIVE:
                return None
            return exited(
                current,
                host_id,
                report.exit_code,
                report.oom_killed,
                now or datetime.now(UTC),
                report.stopped_by_host,
            )
        case ContainerFailed():
            current = _check_host(state, report.alloc_id, host_id)
            if current.status not in ACTIVE:
                return None
            if report.reason == PULL_FAILED:
                return pull_failed(current, host_id, report)
            return ended(
                current,
                host_id,
                AllocationFailed(
                    alloc_id=current.alloc_id,
                    host_id=host_id,
                    reason=report.reason,
                    detail=report.detail,
                ),
            )
    return None


def decide_actual_state(
    allocations: list[AllocationState], host_id: str, report: ActualState, *, now: datetime | None = None
) -> list[Decision]:
    """Allocations active on this host that the host's own account contradicts."""
    at = now or datetime.now(UTC)
    seen = {c.alloc_id: c for c in report.containers}
    fetching = set(report.pulling)
    decisions: list[Decision] = []
    for state in allocations:
        if state.host_id != host_id or state.status not in ACTIVE:
            continue
        container = seen.get(state.alloc_id)
        if container is None and state.alloc_id in fetching:
            continue  # no container yet: the host is pulling its image
        if container is None:
            # Only allocations the host knew of when it reconciled can be judged missing.
            placed_at = state.placed_position or 0
            if placed_at and placed_at <= report.as_of_position:
                decisions.append(
                    ended(
                        state,
                        host_id,
                        AllocationFailed(
                            alloc_id=state.alloc_id,
                            host_id=host_id,
                            reason="container_missing",
                            detail="the host reports no container for this allocation",
                        ),
                    )
                )
        elif not container.running:
            decisions.append(exited(state, host_id, container.exit_code or 0, container.oom_killed, at))
        elif state.status in STARTING:
            decisions.append(
                Decision(
                    state.alloc_id,
                    [
                        AllocationRunning(
                            alloc_id=state.alloc_id,
                            host_id=host_id,
                            container_id=container.container_id,
                        )
                    ],
                    expected=state.version,
                )
            )
    return decisions
