"""A container without a network, made without the engine's network code.

An allocation that asks for no network gets network mode `none`. Left at that, the engine
still builds a network sandbox for it and, at every start, runs its own binary again as the
OCI prestart hook `libnetwork-setkey` to hand the sandbox the container's namespace: measured
on a 20.10 engine, a start took 171 ms and cost dockerd 86 ms of CPU; created with
`NetworkDisabled`, 76 ms and 24 ms (bench/README.md, `allocation`). The container is as apart
from the machine's network as before: the runtime gives it a network namespace of its own
(the engine's default spec has one, which `NetworkDisabled` leaves in place) with its
loopback interface up and nothing else. `shares_machine_namespace` checks that after each
start on this machine (docker_driver's `started`): a container in hostd's own namespace would
reach the member's network and the services listening on its loopback.

What the sandbox gave and hostd gives instead: the engine then mounts no /etc/hosts or
/etc/resolv.conf of its own, and the container's are empty files (the engine's init layer),
so `localhost` would not resolve. hostd writes the engine's usual /etc/hosts into its state
directory once (`write_hosts_file`) and every such container gets it bound read-only
(`hosts_mount`): unlike the engine's file, which the container could write outside its disk
bound, it cannot grow. An empty resolv.conf names no server, so a lookup goes to loopback and
fails at once, as the engine's `nameserver 127.0.0.1` did (container_config._dns). Made only
where the engine is on hostd's machine (a unix socket) and has been seen to find the file
(`DockerDriver.usable_hosts_file`: not so for a hostd in a container of its own); elsewhere
the engine's network code runs as before.
"""

import os
from pathlib import Path
from typing import Any

import structlog

from potluck.kernel.atomic_files import replace_file

__all__ = [
    "HOSTS",
    "HOSTS_FILE_NAME",
    "hosts_file_for",
    "hosts_mount",
    "shares_machine_namespace",
    "write_hosts_file",
]

log = structlog.get_logger(__name__)

#: What the engine writes into /etc/hosts for a container of network mode `none`.
HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
#: The file in hostd's state directory.
HOSTS_FILE_NAME = "container-hosts"
HOSTS_TARGET = "/etc/hosts"


def write_hosts_file(state_dir: Path) -> Path:
    """HOSTS in `state_dir`, world-readable (a container's user may be anyone), written again
    only when it is not what it should be: a running container's mount keeps the file it got."""
    path = state_dir / HOSTS_FILE_NAME
    try:
        if path.read_text() == HOSTS and path.stat().st_mode & 0o777 == 0o644:
            return path
    except OSError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    replace_file(path, HOSTS, mode=0o644)
    return path


def hosts_file_for(docker_url: str, state_dir: Path) -> str | None:
    """The hosts file of hostd with this engine and state directory (written if need be), or
    None where containers without a network are left to the engine's network code: an engine
    not on this machine does not see the file, and one hostd cannot write is reported."""
    if not docker_url.startswith("unix://"):
        return None
    try:
        return str(write_hosts_file(state_dir))
    except OSError as exc:
        log.warning(
            "hostd.hosts_file_not_written",
            path=str(state_dir / HOSTS_FILE_NAME),
            error=str(exc),
            hint="containers without a network are made with the engine's network code, which "
            "costs every start more; check that hostd can write its state_dir",
        )
        return None


def hosts_mount(hosts_file: str) -> dict[str, Any]:
    """The create call's mount of `hosts_file` at /etc/hosts, read-only."""
    return {"Type": "bind", "Source": hosts_file, "Target": HOSTS_TARGET, "ReadOnly": True}


def _namespace(pid: int | str) -> tuple[int, int] | None:
    try:
        found = os.stat(f"/proc/{pid}/ns/net")
    except OSError:  # gone, or not ours to read (a hostd that is not root)
        return None
    return found.st_dev, found.st_ino


def shares_machine_namespace(pid: int) -> bool | None:
    """Whether process `pid` (a container's first process, on this machine) is in hostd's own
    network namespace; None when that cannot be read."""
    theirs, ours = _namespace(pid), _namespace("self")
    if theirs is None or ours is None:
        return None
    return theirs == ours
