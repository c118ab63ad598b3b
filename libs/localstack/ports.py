"""Loopback ports: pick a free one, wait until one accepts, tell who listens on one."""

import contextlib
import functools
import os
import random
import socket
import stat
import tempfile
import time
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.proc_stat import stat_fields


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


#: Ports browsers refuse to open pages on (Chromium's restricted list, net/base/port_util.cc, which
#: Firefox's mostly shares): a pool's web page on one shows ERR_UNSAFE_PORT instead. free_port
#: picks from 10,000 up, where only 10080 (amanda) is one; it never hands out any of them.
BROWSERS_REFUSE = frozenset(
    {
        *(1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95),
        *(101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161),
        *(179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563),
        *(587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060),
        *(5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080),
    }
)

#: Ports this process has handed out: a caller often picks several before starting anything
#: (a NATS cluster's client, route and monitoring ports), and none of them is bound yet.
_handed_out: set[int] = set()

#: How long a port handed out stays another process's, through a file of its own in
#: _RESERVATIONS: long enough to start a pool whose ports were picked before it (Postgres, an
#: engine and an image load come first), short enough that abandoned picks come back.
RESERVED_FOR_S = 300.0

#: Where processes on this machine record the ports they handed out. A test picked `potluck up`'s
#: six ports, and before that pool bound its NATS port some seconds later, another test
#: process's server took it: nats-server exited with "address already in use" while the other
#: server answered on the port (a full suite's run, 2026-12-06). Each process's own
#: _handed_out could not see the other's pick.
_RESERVATIONS = Path(tempfile.gettempdir()) / "potluck-ports"


@functools.cache
def _reservations() -> Path | None:
    try:
        _RESERVATIONS.mkdir()
    except FileExistsError:
        # Only a real directory: a link there could point a chmod or a write anywhere.
        return _RESERVATIONS if stat.S_ISDIR(_RESERVATIONS.lstat().st_mode) else None
    except OSError:
        return None
    with contextlib.suppress(OSError):
        # Every user's processes record their picks here, as in /tmp itself (sticky: none
        # removes another's).
        _RESERVATIONS.chmod(0o1777)
    return _RESERVATIONS


def _reserve(port: int) -> bool:
    """Claim `port` for this process against every other that picks through free_port; False if
    another claimed it less than RESERVED_FOR_S ago. Without a shared directory to write in,
    this process's own record is all there is, and the claim is granted."""
    reservations = _reservations()
    if reservations is None:
        return True
    path = reservations / str(port)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        try:
            if time.time() - path.lstat().st_mtime < RESERVED_FOR_S:
                return False
            # An old claim: its server started long ago (and holds the port, which _bindable
            # sees) or never did. Renewed so that nobody else takes it over now.
            os.utime(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:
            pass
        return True
    except OSError:
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, for a server we start next; never one this process
    handed out before (two nodes of one cluster given the same port failed to start), nor one
    another process on this machine handed out in the last RESERVED_FOR_S, nor one browsers
    refuse (BROWSERS_REFUSE: a pool on 10080 had a web page no browser opened).

    Chosen below the kernel's ephemeral range: a port from that range (what binding
    to port 0 gives) can be taken by any outgoing connection in the moment between
    choosing it and the server binding it, which made servers fail to start.
    """
    low, _ = _ephemeral_range()
    if low > 11_000:
        for _ in range(64):
            port = random.randint(10_000, low - 1)
            if (
                port not in _handed_out
                and port not in BROWSERS_REFUSE
                and _bindable(port, host)
                and _reserve(port)
            ):
                _handed_out.add(port)
                return port
    # The kernel's own pick: ephemeral, but free now. It may give a port again once the socket
    # closes, so one handed out before (not bound yet) is passed over here too.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, *, what: str, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return
        time.sleep(0.05)
    raise LocalStackError(f"{what} did not accept connections on {host}:{port} within {timeout:.0f}s")


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listening_pids(port: int) -> set[int] | None:
    """The processes holding a TCP socket that listens on `port` (any address), from /proc; None
    where that cannot be told (no /proc, or the socket is in another network namespace)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    holders: set[int] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in wanted for fd in fd_dir.iterdir()):
                holders.add(int(fd_dir.parent.name))
    return holders or None


def _parent(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether `pid` is `ancestor` or a process it started (a server that forks its listener)."""
    for _ in range(64):
        if pid == ancestor:
            return True
        parent = _parent(pid)
        if parent is None or parent <= 1:
            return False
        pid = parent
    return False


def describe_pids(pids: set[int]) -> str:
    """`pid 123 (nginx)` for each, as an operator looks them up."""

    def named(pid: int) -> str:
        try:
            return f"pid {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})"
        except OSError:
            return f"pid {pid}"

    return ", ".join(named(pid) for pid in sorted(pids))
