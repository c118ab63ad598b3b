"""Pure reconciliation: what should run here versus what the engine has.

After a restart hostd adopts the containers it finds (this host's by their
labels, which hostd always sets itself; each one's allocation by its name,
never by a label an image could supply: docker_driver.py), stops
the ones no allocation wants, and starts wanted ones that are missing. A
task's container that exited is reported, not restarted: a task runs once.
An interactive allocation's container (its keep-alive, helper.py) that stopped
is started again (`restart`), its files as they were: such an allocation is up
until released or expired, and only something outside it (the engine
restarted, the machine rebooted) stops its keep-alive; not one the host
stopped itself (`no_restart`: drained, or stopped for a failure). A container
that was created but never started (hostd stopped between the two) did not
run the work: it is reported as failed, never as an exit with code 0. Two
containers for one allocation (never made by us, and by name impossible
but for a rename by hand) keep the running, older one.

A kept allocation's stopped container (`kept`: its command exited, and its
user may still fetch its files and logs until the allocator discards it) is
neither removed nor reported: its end is on record already. Only its
duplicates, if any, go.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import ManagedContainer


@dataclass(frozen=True)
class Plan:
    start: list[ContainerSpec] = field(default_factory=list)
    adopt: list[ManagedContainer] = field(default_factory=list)
    report_exited: list[ManagedContainer] = field(default_factory=list)
    restart: list[ManagedContainer] = field(default_factory=list)
    report_never_started: list[ManagedContainer] = field(default_factory=list)
    remove: list[ManagedContainer] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.start
            or self.adopt
            or self.report_exited
            or self.restart
            or self.report_never_started
            or self.remove
        )


def never_started(c: ManagedContainer) -> bool:
    """Created and not started: the engine says "created" and no start time."""
    return not c.running and c.status == "created" and c.started_at is None


def _preference(c: ManagedContainer) -> tuple[int, float, str]:
    started = c.started_at.timestamp() if c.started_at else float("inf")
    # The id last, so that of two alike the same is kept whatever order the engine lists them in.
    return (0 if c.running else 1, started, c.container_id)


def reconcile(
    desired: Mapping[str, ContainerSpec],
    actual: Sequence[ManagedContainer],
    kept: Collection[str] = (),
    no_restart: Collection[str] = (),
) -> Plan:
    plan = Plan()
    by_alloc: dict[str, list[ManagedContainer]] = {}
    for container in actual:
        by_alloc.setdefault(container.allocation_id, []).append(container)
    for alloc_id, containers in sorted(by_alloc.items()):
        keep, *extra = sorted(containers, key=_preference)
        plan.remove.extend(extra)
        if alloc_id in kept and alloc_id not in desired:
            continue
        if alloc_id not in desired:
            plan.remove.append(keep)
        elif keep.running:
            plan.adopt.append(keep)
        elif never_started(keep):
            plan.report_never_started.append(keep)
        elif keep.keeps_alive and alloc_id not in no_restart:
            plan.restart.append(keep)
        else:
            plan.report_exited.append(keep)
    for alloc_id, spec in sorted(desired.items()):
        if alloc_id not in by_alloc:
            plan.start.append(spec)
    return plan
