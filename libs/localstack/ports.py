"""Loopback ports: pick a free one, wait until one accepts."""

import random
import socket
import time
from pathlib import Path

from potluck.localstack.errors import LocalStackError


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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, for a server we start next, and never one this process
    handed out before (two nodes of one cluster given the same port failed to start), and never
    one browsers refuse (BROWSERS_REFUSE: a pool on 10080 had a web page no browser opened).

    Chosen below the kernel's ephemeral range: a port from that range (what binding
    to port 0 gives) can be taken by any outgoing connection in the moment between
    choosing it and the server binding it, which made servers fail to start.
    """
    low, _ = _ephemeral_range()
    if low > 11_000:
        for _ in range(64):
            port = random.randint(10_000, low - 1)
            if port not in _handed_out and port not in BROWSERS_REFUSE and _bindable(port, host):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
