"""A process's /proc/PID/stat, as the fields after its command name."""

from pathlib import Path

__all__ = ["children", "stat_fields"]


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (index 0 is the state, 1 the parent,
    19 the start time); None once the process is gone. The name, in parentheses, may hold spaces
    and parentheses: the fields are read past its last one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def children(pid: int, *, live_only: bool = False) -> list[int]:
    """The processes whose parent is `pid`; with `live_only`, not those that have ended and
    wait to be reaped (a stopped parent reaps none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == pid and not (live_only and fields[0] in ("Z", "X")):
            found.append(int(entry.name))
    return found
