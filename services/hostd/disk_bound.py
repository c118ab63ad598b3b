"""What counts against an allocation's disk bound, and when it is past it.

A container writes to its own layer, which the engine bounds (`storage_opt`, where its
filesystem has quotas) or hostd measures (`SizeRw`, everywhere else). It can also write to
three files the engine keeps for it outside that layer and bind-mounts read-write:
/etc/hosts, /etc/hostname and /etc/resolv.conf. Neither the layer's size nor an engine's
quota counts them, so a user could fill the member's disk through `/etc/hosts` while the
layer stayed empty. They count here: the bound is on everything the container wrote.

Pure: containers.py's disk guard measures, this decides.
"""

from collections.abc import Mapping

__all__ = ["OUTSIDE_LAYER_FILES", "OUTSIDE_LAYER_SLACK", "disk_overrun", "needs_layer_measured"]

#: The engine's files a container can write outside its own layer.
OUTSIDE_LAYER_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")

#: What those files may hold before an engine with a quota has the layer measured as well:
#: the engine writes a few hundred bytes; a user's own host aliases stay far below this.
OUTSIDE_LAYER_SLACK = 64 * 1024


def needs_layer_measured(*, engine_quota: bool, outside: Mapping[str, int]) -> bool:
    """Must the layer be measured too? Always without a quota; with one, the layer cannot pass
    the bound alone, so only once the files outside it hold more than the slack (then the two
    together can)."""
    return not engine_quota or sum(outside.values()) > OUTSIDE_LAYER_SLACK


def disk_overrun(layer: int, outside: Mapping[str, int], bound: int) -> str | None:
    """Why the container is past `bound` (the failure's detail), or None while it is within."""
    written_outside = {path: size for path, size in outside.items() if size > 0}
    used = layer + sum(written_outside.values())
    if used <= bound:
        return None
    detail = f"wrote {used} bytes, more than its disk bound of {bound}"
    largest = max(written_outside.items(), key=lambda item: item[1], default=None)
    if largest is not None and largest[1] > OUTSIDE_LAYER_SLACK:
        path, size = largest
        detail += f" ({size} of them to {path}, which counts against the bound like any other file)"
    return detail
