"""Session commands hostd serves itself instead of running them in the container.

These exec command names are reserved: a session whose command is one of them
is served by hostd, not by the container's own programs (but `put`, which runs
the container's tar under hostd's eye), and reading works on a running
container and on a stopped, kept one alike (AllocationExited.kept_until):

    potluck-logs [--follow|-f] [--tail N]   its stdout and stderr (container_logs.py)
    potluck-archive get PATH                PATH as a tar stream (container_archive.py)
    potluck-archive put NEED DST NAME       a tar stream unpacked at DST, within the
                                            disk bound (container_upload.py)

`potluck logs` and `potluck cp` send them through the gateway like any exec
session (the same audit, the same per-allocation caps
in session_slots.py). A malformed one is refused with its usage.
"""

import argparse
from dataclasses import dataclass

from potluck.contracts.session_commands import ARCHIVE, LOGS, command_argv
from potluck.hostd.container_archive import open_archive, open_archive_inside
from potluck.hostd.container_logs import LogsRequest, open_logs
from potluck.hostd.container_upload import ArchivePut, open_upload
from potluck.hostd.exec_bridge import ExecBridge, SessionProcess, has_helper
from potluck.hostd.exec_errors import ExecRefused
from potluck.kernel.digits import is_digits

__all__ = ["ARCHIVE", "LOGS", "ArchiveGet", "ArchivePut", "Reserved", "open_reserved", "reserved_command"]

_LOGS_USAGE = f"usage: {LOGS} [--follow] [--tail N]"
_ARCHIVE_USAGE = f"usage: {ARCHIVE} get PATH | {ARCHIVE} put NEED DST NAME"


@dataclass(frozen=True)
class ArchiveGet:
    path: str


Reserved = LogsRequest | ArchiveGet | ArchivePut


class _Refusing(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ExecRefused(f"{self.usage}: {message}")


def reserved_command(command: str | None) -> Reserved | None:
    """What a reserved session command asks for; None when `command` is not one (it runs in the
    container); ExecRefused when it is one, malformed."""
    argv = command_argv(command)
    if argv is None or argv[0] not in (LOGS, ARCHIVE):
        return None
    if argv[0] == LOGS:
        parser = _Refusing(prog=LOGS, usage=_LOGS_USAGE, add_help=False)
        parser.add_argument("-f", "--follow", action="store_true")
        parser.add_argument("--tail", type=int, default=None)
        args = parser.parse_args(argv[1:])
        if args.tail is not None and args.tail < 0:
            raise ExecRefused(f"{_LOGS_USAGE}: --tail must be 0 or more")
        return LogsRequest(follow=args.follow, tail=args.tail)
    if len(argv) == 5 and argv[1] == "put" and is_digits(argv[2]) and argv[3] and argv[4]:
        if "/" in argv[4] or argv[4] in (".", ".."):
            raise ExecRefused(f"{_ARCHIVE_USAGE}: NAME is one name, not a path")
        return ArchivePut(int(argv[2]), argv[3], argv[4])
    if len(argv) != 3 or argv[1] != "get" or not argv[2]:
        raise ExecRefused(_ARCHIVE_USAGE)
    return ArchiveGet(argv[2])


async def open_reserved(
    bridge: ExecBridge, alloc_id: str, request: Reserved, env: dict[str, str] | None = None
) -> SessionProcess:
    """Serve `request` from the allocation's container, running or stopped (a `put` needs it
    running: it runs the container's tar); `env`: the session's, for what runs in it."""
    if isinstance(request, ArchivePut):
        return await open_upload(bridge, alloc_id, request, env or {})
    if isinstance(request, LogsRequest):
        container_id = await bridge.container_for(alloc_id, stopped_ok=True)
        return await open_logs(bridge.docker_url, container_id, request, bridge.timeout)
    # A running container's files are read inside it, never by the engine (container_archive.py).
    container = await bridge.container_of(alloc_id, stopped_ok=True)
    if (container.get("State") or {}).get("Running"):
        try:
            return await open_archive_inside(bridge, alloc_id, request.path, helper=has_helper(container))
        except ExecRefused:
            container = await bridge.container_of(alloc_id, stopped_ok=True)
            if (container.get("State") or {}).get("Running"):
                raise  # paused, restarting: said so
            # It stopped since: nothing runs in it now, the engine may read it.
    return await open_archive(bridge.docker_url, str(container["Id"]), request.path, bridge.timeout)
