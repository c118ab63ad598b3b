"""Containers created ahead (issue 20): which allocations a warm container can become, and
which warm containers to keep. Pure: no Docker here (warm_engine.py makes and takes them,
warm_keeper.py keeps them filled).

Docker cannot change a container's command, environment, labels or disk quota after
create, so a warm container is made for one *shape* of allocation (`WarmKey`): its image,
its command (None: interactive, the helper's keep-alive), and its disk bound. An allocation
of that shape takes it as it is; its CPU, memory and pids limits are set at take time with
`docker update` and read back as for any container. A warm container holds no user data:
an allocation's environment values (users' secrets, a batch task's index) reach it only
when it is taken, and only one started ahead can take them (`env_at_take`): a task's
launcher reads them before it runs the command (launcher.py), and hostd's exec bridge gives
them to every session into it. Allocations with a network of their own never take one: a
network is made per allocation.

With the helper (helper.py) on this machine, every warm container is started ahead too and
frozen (`docker pause`): taking it is `docker update` and `docker unpause`, no start at all
(`starts_ahead`). An interactive shape (no command) runs hostd's own keep-alive, which a
container started at placement would run just the same; a shape with a command runs the
launcher (launcher.py), which waits for its go before it `exec`s the command, so nothing of
the command runs before the allocation is placed.

A warm container's labels name no allocation (that label is set, empty), only this host
and `potluck.warm`; once taken it is renamed `potluck-<allocation>`, and that name is what
tells whose it is (`container_config.allocation_of`, as for every container). Its disk
bound is the taker's spec's, which hostd holds (the exec side's SFTP server asks for it:
ContainerManager.disk_bound_of), never a label.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from potluck.contracts.capacity import MIN_CPUS
from potluck.hostd.container_config import (
    HARDWARE_PATHS,
    LABEL_HOST,
    LABEL_MANAGED,
    LABEL_WARM,
    MIN_MEMORY_BYTES,
    ContainerSpec,
    create_kwargs,
    own_labels,
)
from potluck.hostd.launcher import launcher_entrypoint

#: Not NAME_PREFIX ("potluck-"): no allocation's container name can be a warm one's.
WARM_NAME_PREFIX = "potluck_warm_"
#: Shapes kept warm: the most recently placed ones, so the pool follows what runs here.
RECENT_SHAPES = 2
#: A warm container's pids limit until taken: docker-init and the keep-alive, with room.
PLACEHOLDER_PIDS = 8
#: The CPU a warm container started ahead has while it starts, until its keep-alive or
#: launcher runs: at the placeholder's MIN_CPUS runc's own set-up inside the container
#: (`runc init`) took over 10 s on a busy machine. It is lowered again before the freeze.
STARTING_CPUS = 0.5


@dataclass(frozen=True)
class WarmKey:
    """The shape of allocation a warm container can become."""

    image: str
    command: tuple[str, ...] | None
    disk_bytes: int


def warm_key(spec: ContainerSpec, *, env_at_take: bool) -> WarmKey | None:
    """The shape `spec` has, or None when no warm container may become it. `env_at_take`:
    whether warm containers here can be given environment values when taken (the function
    of that name answers it for a machine)."""
    if spec.network or (spec.env and not env_at_take):
        return None
    return WarmKey(
        image=spec.image,
        command=None if spec.command is None else tuple(spec.command),
        disk_bytes=spec.disk_bytes,
    )


def starts_ahead(helper: str | None) -> bool:
    """Are warm containers started (and frozen) ahead? Only with the helper, whose keep-alive
    or launcher is all they run until taken, never the image's command or an allocation's."""
    return helper is not None


def env_at_take(helper: str | None) -> bool:
    """Can a warm container here take an allocation's environment values? Only one started
    ahead: its launcher reads them at the go, and sessions get them from the exec bridge."""
    return starts_ahead(helper)


@dataclass(frozen=True)
class WarmContainer:
    container_id: str
    key: WarmKey
    #: Started ahead and paused (starts_ahead), else created only.
    started: bool = False


@dataclass
class RecentShapes:
    """The shapes of the last allocations placed here, newest first, at most `size`."""

    size: int = RECENT_SHAPES
    keys: list[WarmKey] = field(default_factory=list)

    def note(self, key: WarmKey) -> None:
        if key in self.keys:
            self.keys.remove(key)
        self.keys.insert(0, key)
        del self.keys[self.size :]

    def forget(self, key: WarmKey) -> None:
        if key in self.keys:
            self.keys.remove(key)


@dataclass(frozen=True)
class RefillPlan:
    create: list[WarmKey] = field(default_factory=list)
    remove: list[WarmContainer] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.create or self.remove)


def refill_plan(
    wanted: Sequence[WarmKey], have: Iterable[WarmContainer], per_key: int, disk_free: int
) -> RefillPlan:
    """Keep `per_key` warm containers of each wanted shape (newest shape first), and none of
    any other. `disk_free`: the donated disk no allocation reserves; warm containers count
    against it with their disk bound, so together they never promise more than was donated."""
    plan = RefillPlan()
    by_key: dict[WarmKey, list[WarmContainer]] = {}
    for container in have:
        if container.key in wanted and per_key > 0:
            by_key.setdefault(container.key, []).append(container)
        else:
            plan.remove.append(container)
    budget = disk_free
    for key in wanted:
        kept = by_key.get(key, [])
        for container in kept[per_key:]:
            plan.remove.append(container)
        for container in kept[:per_key]:
            if container.key.disk_bytes > budget:
                plan.remove.append(container)  # allocations took the disk it counted on
            else:
                budget -= container.key.disk_bytes
        for _ in range(per_key - len(kept[:per_key])):
            if key.disk_bytes > budget:
                break
            budget -= key.disk_bytes
            plan.create.append(key)
    return plan


def take(have: list[WarmContainer], spec: ContainerSpec) -> WarmContainer | None:
    """Remove from `have` and return a warm container `spec` can become, if there is one:
    of its shape, and started ahead if `spec` has environment values."""
    key = warm_key(spec, env_at_take=True)
    for i, container in enumerate(have):
        if container.key == key and (container.started or not spec.env):
            return have.pop(i)
    return None


def placeholder_spec(key: WarmKey, host_id: str, suffix: str, *, starting: bool = False) -> ContainerSpec:
    """The spec a warm container is created from: the shape's image, command and disk bound,
    and the tightest CPU, memory and pids limits, which its taker raises to its own; one
    `starting` ahead gets STARTING_CPUS until it is frozen."""
    return ContainerSpec(
        allocation_id=f"warm-{suffix}",
        host_id=host_id,
        image=key.image,
        cpus=STARTING_CPUS if starting else MIN_CPUS,
        memory_bytes=MIN_MEMORY_BYTES,
        disk_bytes=key.disk_bytes,
        pids_limit=PLACEHOLDER_PIDS,
        command=None if key.command is None else list(key.command),
    )


def warm_labels(host_id: str) -> dict[str, str]:
    """This host's, managed, warm; no allocation and no spec, set empty (`own_labels`): an
    image's value of either would otherwise show through, and name another's allocation."""
    return own_labels({LABEL_HOST: host_id, LABEL_MANAGED: "1", LABEL_WARM: "1"})


def warm_create_kwargs(
    key: WarmKey,
    host_id: str,
    suffix: str,
    *,
    disk_quota: bool,
    helper: str | None,
    cgroup_parent: str | None,
    hardware: tuple[str, ...] = HARDWARE_PATHS,
    image_entrypoint: list[str] | None,
    hosts_file: str | None = None,
) -> dict[str, Any]:
    """create_kwargs of an allocation of this shape (the same hardening, mounts, entrypoint,
    log settings), with a warm container's name and labels and the placeholder's limits; a
    shape with a command that is started ahead runs it through the launcher, after the
    image's ENTRYPOINT (`image_entrypoint`) as docker would."""
    kwargs = create_kwargs(
        placeholder_spec(key, host_id, suffix, starting=starts_ahead(helper)),
        disk_quota=disk_quota,
        helper=helper,
        cgroup_parent=cgroup_parent,
        hardware=hardware,
        hosts_file=hosts_file,
    )
    kwargs["name"] = WARM_NAME_PREFIX + suffix
    kwargs["labels"] = warm_labels(host_id)
    if key.command is not None and starts_ahead(helper):
        kwargs["entrypoint"] = launcher_entrypoint(image_entrypoint)
        # Where the launcher reads the taker's environment values from (env_payload); the
        # command itself gets /dev/null, as without it.
        kwargs["stdin_open"] = True
    return kwargs


def limits_update(spec: ContainerSpec) -> dict[str, Any]:
    """The body of `POST /containers/{id}/update` that gives a taken warm container `spec`'s
    limits: the same values create_kwargs would have set (memory equal to memory-plus-swap)."""
    return {
        "NanoCpus": spec.nano_cpus,
        "Memory": spec.memory_bytes,
        "MemorySwap": spec.memory_bytes,
        "PidsLimit": spec.pids_limit,
    }
