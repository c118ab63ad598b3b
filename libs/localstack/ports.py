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


#: Ports this process has handed out: a caller often picks several before starting anything
#: (a NATS cluster's client, route and monitoring ports), and none of them is bound yet.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, for a server we start next, and never one this process
    handed out before (two nodes of one cluster given the same port failed to start).

    Chosen below the kernel's ephemeral range: a port from that range (what binding
    to port 0 gives) can be taken by any outgoing connection in the moment between
    choosing it and the server binding it, which made servers fail to start.
    """
    low, _ = _ephemeral_range()
    if low > 11_000:
        for _ in range(64):
            port = random.randint(10_000, low - 1)
            if port not in _handed_out and _bindable(port, host):
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
