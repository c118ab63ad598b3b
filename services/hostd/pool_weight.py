"""The pool's containers as one group at the lowest CPU weight, against the owner's processes.

A container's own weight (`cpu_shares` 2) ranks it only among its siblings. Under the
engine's parent group (`/docker` with the cgroupfs driver, `system.slice` with systemd)
the whole group competes with the owner's processes at the default weight, so a container
burning its quota still takes half of a two-core machine from an owner who wants all of it
(measured: the owner 1.44 times slower, `ops/bench member`). So pool containers get a
parent group of their own (`cgroup_parent`), and hostd gives that parent the lowest weight
too: the owner's processes win any core they want, and the pool keeps what nobody else
uses. The member's own containers on the same engine keep the engine's parent, untouched.

Pure path logic apart from `lower_parent_weight`, which writes one file. hostd can do it
only for an engine on this machine (it reads /proc and /sys); for an engine elsewhere the
containers keep their own lowest weight only.
"""

from pathlib import Path

from potluck.hostd.cpu_load import CGROUP_ROOT, parse_proc_cgroup

__all__ = ["POOL_PARENTS", "cgroup_parent", "lower_parent_weight", "parent_weight_file"]

#: The parent group of pool containers, by the engine's cgroup driver.
POOL_PARENTS = {"cgroupfs": "/potluck", "systemd": "potluck.slice"}
#: The lowest weights: cgroup v1 cpu.shares, cgroup v2 cpu.weight.
V1_SHARES = 2
V2_WEIGHT = 1


def cgroup_parent(cgroup_driver: str) -> str:
    """The `cgroup_parent` for pool containers on an engine with this cgroup driver."""
    return POOL_PARENTS.get(cgroup_driver, POOL_PARENTS["cgroupfs"])


def parent_weight_file(proc_cgroup: str, root: Path = CGROUP_ROOT) -> tuple[Path, int] | None:
    """The weight file of the pool's parent group of the process whose /proc/<pid>/cgroup is
    `proc_cgroup`, and the lowest value to write there; None when the process is not in one
    of the pool's parents (never another group's file: not /docker, not system.slice)."""
    cgroups = parse_proc_cgroup(proc_cgroup)
    if "cpu" in cgroups:
        path, name, value = cgroups["cpu"], "cpu.shares", V1_SHARES
        mounts = [root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"]
    elif "" in cgroups:
        path, name, value = cgroups[""], "cpu.weight", V2_WEIGHT
        mounts = [root]
    else:
        return None
    parent = Path(path).parent
    if parent.name not in {p.strip("/") for p in POOL_PARENTS.values()}:
        return None
    for mount in mounts:
        candidate = mount / str(parent).lstrip("/") / name
        if candidate.exists():
            return candidate, value
    return None


def lower_parent_weight(pid: int, root: Path = CGROUP_ROOT) -> Path | None:
    """Give the pool's parent group of process `pid` the lowest CPU weight; the file written,
    or None when there is none to write (an engine elsewhere, or no such group)."""
    try:
        found = parent_weight_file(Path(f"/proc/{pid}/cgroup").read_text(), root)
    except OSError:
        return None
    if found is None:
        return None
    path, value = found
    if path.read_text().strip() != str(value):
        path.write_text(f"{value}\n")
    return path
