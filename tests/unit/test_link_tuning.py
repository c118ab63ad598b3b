"""How both ends of the link tune their connections (potluck.contracts.link): a short CPU
slice, and no ignore packet before every packet."""

import ctypes
import os
import platform
import struct
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from potluck.contracts.link import request_short_slice, skip_ignore_packets

T = TypeVar("T")
_GETATTR = {"x86_64": 315, "aarch64": 275}.get(platform.machine())


def _slice_ns() -> int:
    """sched_getattr's runtime of the calling thread (the slice, on an EEVDF kernel)."""
    assert _GETATTR is not None
    buf = ctypes.create_string_buffer(56)
    assert ctypes.CDLL(None, use_errno=True).syscall(_GETATTR, 0, buf, 56, 0) == 0
    return int(struct.unpack("=IIQiIQQQII", buf.raw)[5])


def _in_thread(fn: Callable[[], T]) -> T:
    # A thread of its own, so that the test process's main thread keeps its slice.
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


@pytest.mark.skipif(sys.platform != "linux" or _GETATTR is None, reason="Linux x86_64/aarch64 only")
def test_zero_asks_for_nothing() -> None:
    """Asked for a slice of 0 (the setting that keeps the kernel's default): the thread's slice
    is left as it was, and the call says it asked for nothing."""

    def run() -> tuple[bool, int, int]:
        before = _slice_ns()
        return request_short_slice(0), before, _slice_ns()

    asked, before, after = _in_thread(run)
    assert asked is False
    assert after == before


@pytest.mark.skipif(sys.platform != "linux" or _GETATTR is None, reason="Linux x86_64/aarch64 only")
def test_short_slice_is_what_the_kernel_then_reports() -> None:
    """Asking for a 100 us slice succeeds without privileges, and the kernel (one that reports
    a slice at all) reports that slice for the thread; its nice value is kept."""

    def run() -> tuple[bool, int, int, int]:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        before = _slice_ns()
        asked = request_short_slice(100)
        return asked, before, _slice_ns(), nice - os.getpriority(os.PRIO_PROCESS, 0)

    asked, before, after, nice_moved = _in_thread(run)
    assert asked is True
    assert nice_moved == 0
    if before:  # kernels before EEVDF's custom slices report 0 and ignore the request
        assert after == 100_000


class _Conn:
    """What skip_ignore_packets uses of an asyncssh connection: send_packet and the cipher."""

    def __init__(self, cipher: str) -> None:
        self.cipher = cipher
        self.sent: list[tuple[int, tuple[bytes, ...]]] = []

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        self.sent.append((pkttype, args))

    def get_extra_info(self, name: str) -> str:
        return self.cipher if name == "send_cipher" else ""


@pytest.mark.parametrize(
    ("cipher", "ignores_kept"),
    [("aes128-gcm@openssh.com", 0), ("chacha20-poly1305@openssh.com", 0), ("aes256-cbc", 1), ("", 1)],
)
def test_only_the_empty_ignore_before_each_packet_is_skipped(cipher: str, ignores_kept: int) -> None:
    """An empty ignore packet, data and a non-empty ignore are sent: with an AEAD cipher only
    the empty ignore is dropped; with CBC (or before keys are chosen) everything goes out."""
    conn = _Conn(cipher)
    skip_ignore_packets(conn)
    conn.send_packet(2, b"\0\0\0\0")
    conn.send_packet(94, b"\0\0\0\1", b"\0\0\0\3abc")
    conn.send_packet(2, b"\0\0\0\1x")
    types = [t for t, _ in conn.sent]
    assert types.count(94) == 1
    assert (2, (b"\0\0\0\1x",)) in conn.sent
    assert conn.sent.count((2, (b"\0\0\0\0",))) == ignores_kept
