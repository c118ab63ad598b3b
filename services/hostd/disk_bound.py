"""What counts against an allocation's disk bound, and when it is past it.

A container writes to its own layer, which the engine bounds (`storage_opt`, where its
filesystem has quotas) or hostd measures (`SizeRw`, everywhere else). It can also write to
three files the engine keeps for it outside that layer and bind-mounts read-write:
/etc/hosts, /etc/hostname and /etc/resolv.conf. Neither the layer's size nor an engine's
quota counts them, so a user could fill the member's disk through `/etc/hosts` while the
layer stayed empty. They count here: the bound is on everything the container wrote.

Where the engine has no quota, the layer's size is what the engine measures (`SizeRw`): the
sizes of its regular files, which leaves out directories and empty files altogether. On the
member's disk each of them is an inode, and a directory a block of its own: a container
making millions of empty directories filled the disk (and ran ext4 out of inodes) at a
`SizeRw` of 0. So each entry of the layer (file, directory, link, whiteout of a deleted one)
counts as well, a block each (`ENTRY_BYTES`): about what it takes, and what `du` says.

The guard measures every container at a regular interval, and a container writing toward
its bound sooner (`next_measure_in`): a steady writer is stopped close to its bound rather
than up to a whole interval's writing past it. One that wrote nothing between two measures
and then writes in a burst has no rate to go by: the guard reads what it wrote since every
second, without the engine (write_activity.py), and measures it at once when that could take
it past its bound (`measure_now`). Counting the entries costs the engine far more
than the bytes, in proportion to the image's files: they are counted less often
(layer_walks.py).

The bound is the allocation's disk less its output log's part (ContainerSpec.writable_bytes):
the engine keeps the log on the member's disk as well, in files bounded when the container is
made (container_config.py), so the two together never take more than the allocation's disk.

Pure: containers.py's disk guard measures, this decides.
"""

from collections.abc import Mapping

from potluck.contracts.uploads import ENTRY_BYTES

__all__ = [
    "ENTRY_BYTES",
    "OUTSIDE_LAYER_FILES",
    "OUTSIDE_LAYER_SLACK",
    "SOONEST_MEASURE_S",
    "disk_overrun",
    "entries_bytes",
    "entries_most",
    "measure_now",
    "needs_layer_measured",
    "next_measure_in",
    "written_bytes",
]

#: The engine's files a container can write outside its own layer.
OUTSIDE_LAYER_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")

#: What those files may hold before an engine with a quota has the layer measured as well:
#: the engine writes a few hundred bytes; a user's own host aliases stay far below this.
OUTSIDE_LAYER_SLACK = 64 * 1024


#: The shortest wait between two measures of one container: each has the engine walk the
#: container's layer for its bytes, which costs the member's disk and CPU in proportion to the
#: layer's files (its entries are counted on a clock of their own: layer_walks.py).
SOONEST_MEASURE_S = 1.0


def needs_layer_measured(*, engine_quota: bool, outside: Mapping[str, int]) -> bool:
    """Must the layer be measured too? Always without a quota; with one, the layer cannot pass
    the bound alone, so only once the files outside it hold more than the slack (then the two
    together can)."""
    return not engine_quota or sum(outside.values()) > OUTSIDE_LAYER_SLACK


def entries_bytes(entries: int) -> int:
    """What `entries` files and directories of the layer count against the bound."""
    return entries * ENTRY_BYTES


def written_bytes(layer: int, outside: Mapping[str, int], entries: int = 0) -> int:
    """What a container wrote, as counted against its bound: its layer's bytes, its entries
    (`entries_bytes`) and the engine's files outside the layer."""
    return layer + entries_bytes(entries) + sum(outside.values())


def entries_most(layer: int, outside: Mapping[str, int], bound: int) -> int:
    """How many entries the layer may hold before, with what else was written, it is past the
    bound: no more need counting (one more says it is past)."""
    return max(0, (bound - layer - sum(outside.values())) // ENTRY_BYTES)


def disk_overrun(
    layer: int, outside: Mapping[str, int], bound: int, *, entries: int = 0, log_part: int = 0
) -> str | None:
    """Why the container is past `bound` (the failure's detail), or None while it is within.
    `entries`: the files, directories, links and whiteouts of its layer (`entries_bytes`);
    `log_part`: what of the allocation's disk its output log has, besides `bound`."""
    written_outside = {path: size for path, size in outside.items() if size > 0}
    used = written_bytes(layer, written_outside, entries)
    if used <= bound:
        return None
    # Named by the disk the user asked for: the bound's own number would puzzle them.
    detail = f"wrote {used} bytes, more than its disk bound of {bound + log_part}"
    if log_part:
        detail += f" less the {log_part} its output log may take"
    if entries_bytes(entries) > layer:
        detail += (
            f" ({entries} files and directories in its layer, each of which takes an inode and a block "
            f"of the member's disk, {ENTRY_BYTES} bytes each against the bound, whatever its size)"
        )
    largest = max(written_outside.items(), key=lambda item: item[1], default=None)
    if largest is not None and largest[1] > OUTSIDE_LAYER_SLACK:
        path, size = largest
        detail += f" ({size} of them to {path}, which counts against the bound like any other file)"
    return detail


def next_measure_in(*, used: int, rate: float, bound: int, regular_s: float) -> float:
    """Seconds until a container that has written `used` bytes, at `rate` bytes a second since
    its last measure, is measured again. Half the time the rate would take it to its bound,
    between SOONEST_MEASURE_S and the regular interval: at a steady rate it is measured again
    before it reaches the bound, or, once that is less than SOONEST_MEASURE_S away, at most
    that long's writing past it."""
    soonest = min(SOONEST_MEASURE_S, regular_s)
    if rate <= 0:
        return regular_s
    to_bound = (bound - used) / rate
    return max(soonest, min(regular_s, to_bound / 2))


def measure_now(*, used: int, written_since: int, bound: int) -> bool:
    """Must a container that had written `used` bytes at its last measure, and has written
    `written_since` since (write_activity.py: an estimate, about what its layer grew or more),
    be measured now? Once that is half the room it had left: at a steady rate, the half-way
    point next_measure_in measures at; a burst is measured at the first read of its writes
    (one a second) past that point, not at the regular interval."""
    return written_since > 0 and 2 * written_since >= bound - used
