"""Containers created ahead (warm_pool.py): which allocations may take one, which to keep.

By example first (the shapes, taking, the create arguments against an allocation's own,
naming), then hypothesis over any wanted shapes and warm containers found, against the
rules of `refill_plan` stated one by one.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.config import HostdConfig
from potluck.hostd.container_config import (
    CONTAINER_LABELS,
    LABEL_ALLOCATION,
    LABEL_SPEC,
    LABEL_WARM,
    ContainerSpec,
    create_kwargs,
    limit_mismatches,
)
from potluck.hostd.launcher import launcher_entrypoint
from potluck.hostd.warm_pool import (
    RecentShapes,
    WarmContainer,
    WarmKey,
    env_at_take,
    limits_update,
    refill_plan,
    starts_ahead,
    take,
    warm_create_kwargs,
    warm_key,
)

MiB = 1024 * 1024


def _spec(alloc_id: str = "a1", **changes: object) -> ContainerSpec:
    fields: dict[str, object] = {
        "allocation_id": alloc_id,
        "host_id": "host-1",
        "image": "busybox:latest",
        "cpus": 0.5,
        "memory_bytes": 64 * MiB,
        "disk_bytes": 64 * MiB,
        "pids_limit": 512,
        "command": ["sleep", "3600"],
    }
    fields.update(changes)
    return ContainerSpec(**fields)  # type: ignore[arg-type]


def test_shape_leaves_out_limits_env_and_refuses_a_network() -> None:
    """Allocations differing only in CPU, memory, pids or environment values share a shape;
    a command, image or disk bound makes another; a network of its own makes none. Env
    values are given at the take, so only where they can be (containers started ahead)."""
    base = warm_key(_spec(), env_at_take=True)
    assert base == WarmKey("busybox:latest", ("sleep", "3600"), 64 * MiB)
    assert warm_key(_spec("b", cpus=1.5, memory_bytes=128 * MiB, pids_limit=64), env_at_take=True) == base
    assert warm_key(_spec(command=["true"]), env_at_take=True) != base
    assert warm_key(_spec(command=None), env_at_take=True) == WarmKey("busybox:latest", None, 64 * MiB)
    assert warm_key(_spec(disk_bytes=128 * MiB), env_at_take=True) != base
    assert warm_key(_spec(env={"TOKEN": "secret"}), env_at_take=True) == base
    assert warm_key(_spec(env={"TOKEN": "secret"}), env_at_take=False) is None
    assert warm_key(_spec(), env_at_take=False) == base
    assert warm_key(_spec(network=True), env_at_take=True) is None


def test_only_containers_with_the_helper_are_started_ahead() -> None:
    """With the helper, what a warm container runs until taken is hostd's keep-alive or
    launcher, so it may be started ahead; without it the image's own CMD would run: not."""
    assert starts_ahead("/usr/bin/busybox")
    assert env_at_take("/usr/bin/busybox")
    assert not env_at_take(None)
    assert not starts_ahead(None)


def test_take_removes_one_of_the_shape_only() -> None:
    """A placement takes one warm container of its own shape out of the ready list, and
    none of another shape; a second taker of the same shape gets the next one."""
    key = warm_key(_spec(), env_at_take=True)
    assert key is not None
    other = WarmContainer("c-other", WarmKey("busybox:latest", ("true",), 64 * MiB))
    first = WarmContainer("c1", key)
    second = WarmContainer("c2", key, started=True)
    ready = [other, first, second]
    assert take(ready, _spec("a")) == first
    assert take(ready, _spec("b")) == second
    assert take(ready, _spec("c")) is None
    assert ready == [other]


def test_env_values_take_only_a_container_started_ahead() -> None:
    """An allocation with environment values skips a container only created ahead (it would
    start without them) and takes one started ahead, whose launcher reads them at the go."""
    key = warm_key(_spec(), env_at_take=True)
    assert key is not None
    created, started = WarmContainer("c1", key), WarmContainer("c2", key, started=True)
    ready = [created, started]
    assert take(ready, _spec("a", env={"X": "1"})) == started
    assert take(ready, _spec("b", env={"X": "1"})) is None
    assert ready == [created]


def test_recent_shapes_newest_first_bounded() -> None:
    """The shapes noted last are kept, newest first, at most `size`."""
    recent = RecentShapes(size=2)
    a, b, c = (WarmKey(f"img{i}", None, MiB) for i in range(3))
    for key in (a, b, a, c):
        recent.note(key)
    assert recent.keys == [c, a]
    recent.forget(a)
    recent.forget(b)  # not kept: nothing to forget
    assert recent.keys == [c]


@pytest.mark.parametrize("command", [["sleep", "3600"], None])
def test_warm_container_is_made_as_an_allocation_of_its_shape(command: list[str] | None) -> None:
    """A warm container's create arguments are an allocation's own (hardening, mounts,
    entrypoint, logs, disk quota) but for its name, labels (no allocation, no env), the
    tightest limits and, for a command, the launcher (after the image's ENTRYPOINT) as its
    entrypoint; after `limits_update` the read-back finds nothing amiss."""
    spec = _spec(command=command, cpus=1.5)
    key = warm_key(spec, env_at_take=True)
    assert key is not None
    helper = "/usr/bin/busybox"
    warm = warm_create_kwargs(
        key,
        "host-1",
        "abc",
        disk_quota=True,
        helper=helper,
        cgroup_parent="/potluck",
        image_entrypoint=["/entry.sh", "--flag"],
    )
    own = create_kwargs(spec, disk_quota=True, helper=helper, cgroup_parent="/potluck")
    differing = {k for k in own.keys() | warm.keys() if own.get(k) != warm.get(k)}
    limits = {"name", "labels", "nano_cpus", "mem_limit", "memswap_limit", "pids_limit"}
    if command is None:
        assert differing == limits
    else:
        # stdin open: where the launcher reads a taker's environment values from.
        assert differing == limits | {"entrypoint", "stdin_open"}
        assert warm["stdin_open"] is True
        assert warm["entrypoint"] == launcher_entrypoint(["/entry.sh", "--flag"])
        assert warm["command"] == command
    assert warm["environment"] == {}
    assert warm["name"] == "potluck_warm_abc"
    # Every label hostd reads is set, none left for an image's value to show through.
    assert set(warm["labels"]) == set(CONTAINER_LABELS)
    assert warm["labels"][LABEL_ALLOCATION] == ""
    assert warm["labels"][LABEL_SPEC] == ""
    assert warm["labels"][LABEL_WARM] == "1"
    assert warm["nano_cpus"] < spec.nano_cpus
    assert warm["mem_limit"] < spec.memory_bytes
    # What the engine would show once updated: the created settings with the update on top.
    update = limits_update(spec)
    host = {
        "NanoCpus": update["NanoCpus"],
        "CpuShares": warm["cpu_shares"],
        "Memory": update["Memory"],
        "MemorySwap": update["MemorySwap"],
        "PidsLimit": update["PidsLimit"],
        "Ulimits": warm["ulimits"],
        "CapDrop": warm["cap_drop"],
        "CapAdd": warm["cap_add"],
        "SecurityOpt": warm["security_opt"],
        "Privileged": False,
        "NetworkMode": warm["network_mode"],
        "Mounts": warm["mounts"],
        "IpcMode": "private",
        "CgroupnsMode": "private",
        "Init": True,
        "PidMode": "",
        "UTSMode": "",
        "UsernsMode": "",
        "LogConfig": {"Type": "json-file", "Config": warm["log_config"]["config"]},
        "StorageOpt": warm["storage_opt"],
        "MaskedPaths": warm["masked_paths"],
        "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    }
    inspect = {
        "HostConfig": host,
        "Mounts": [
            {"Type": "tmpfs", "Source": "", "Destination": "/.potluck", "RW": False},
            {"Type": "bind", "Source": helper, "Destination": "/.potluck/busybox", "RW": False},
        ],
        "Config": {"Entrypoint": warm.get("entrypoint")},
    }
    assert limit_mismatches(spec, inspect, disk_quota=True, helper=helper) == []
    # Without the update, the placeholder's limits fail the read-back.
    host.update(Memory=warm["mem_limit"], MemorySwap=warm["memswap_limit"])
    assert [m[0] for m in limit_mismatches(spec, inspect, disk_quota=True, helper=helper)] == [
        "Memory",
        "MemorySwap",
    ]


def test_warm_containers_setting_is_validated() -> None:
    """`warm_containers` defaults to none and refuses a negative or too large count, saying
    the range."""
    base = {"host_id": "h-0123456789ab", "credentials_file": "c", "state_dir": "s"}
    donate = {"cpus": 1, "memory": "1G", "disk": "1G"}
    assert HostdConfig.model_validate({**base, "donate": donate}).warm_containers == 0
    assert HostdConfig.model_validate({**base, "donate": donate, "warm_containers": 2}).warm_containers == 2
    for bad in (-1, 9):
        with pytest.raises(ValueError, match="from 0 \\(keep none\\) to 8"):
            HostdConfig.model_validate({**base, "donate": donate, "warm_containers": bad})


KEYS = [WarmKey(f"img{i}", None, (i + 1) * 10 * MiB) for i in range(4)]


@given(
    wanted=st.lists(st.sampled_from(KEYS), unique=True, max_size=3),
    have_keys=st.lists(st.sampled_from(KEYS), max_size=8),
    per_key=st.integers(0, 3),
    disk_free=st.integers(0, 200 * MiB),
)
def test_refill_plan_rules(
    wanted: list[WarmKey], have_keys: list[WarmKey], per_key: int, disk_free: int
) -> None:
    """Whatever is wanted and found: every container found is kept or removed (never both);
    none of an unwanted shape is kept; no shape has more than `per_key` after the plan; the
    kept and created together fit `disk_free`; and the plan creates only wanted shapes."""
    have = [WarmContainer(f"c{i}", key) for i, key in enumerate(have_keys)]
    plan = refill_plan(wanted, have, per_key, disk_free)
    removed = {c.container_id for c in plan.remove}
    assert len(removed) == len(plan.remove)
    kept = [c for c in have if c.container_id not in removed]
    assert all(c.key in wanted for c in kept)
    assert all(k in wanted for k in plan.create)
    after = [c.key for c in kept] + plan.create
    for key in wanted:
        assert after.count(key) <= per_key
    assert sum(k.disk_bytes for k in after) <= disk_free
    # With room enough, every wanted shape ends with exactly per_key.
    if disk_free >= sum(k.disk_bytes for k in wanted) * per_key:
        assert all(after.count(key) == per_key for key in wanted)
