"""Bridging a user's channel to the session on the host's link, both ways, bytes counted.

Bridging is at the channel level, so the gateway sees and counts every byte
for the audit (audit.ByteCounts) and never buffers without bound:

- data, stdout and stderr apart, are written through as they arrive; when a
  channel's send buffer passes its high-water mark asyncssh calls
  `pause_writing()`, and the bridge stops reading the other channel, which
  stops its SSH window updates, which stops the sender (a slow reader slows
  the writer, end to end, through the engine's socket too);
- end of input, window changes, breaks and signals go to the host;
- what the user sends before the host's session is open (the audit append
  and the link come first) is held, and the user's channel stops being read
  until then: at most one read's worth is ever held; signals sent meanwhile
  (a Ctrl-C while the session starts) are held too, at most HELD_SIGNALS of
  them, and go to the host after the held data;
- the SSH window is the peer's to choose, so it bounds nothing against a
  peer that does not want it to: a host's hostd (its member's to change) or a
  user's client that opened the session with a huge window and stopped
  reading its socket made the gateway queue all the other side sent in that
  socket's write buffer (asyncssh ignores its transport's pause; 500 MiB in
  tests/e2e/test_gateway_hostile_host.py). `watch_writes` passes a socket's
  pause on: the link's stops reading the user (one link, one session), the
  user's connection's stops reading the host of each of its sessions.

Each side is read again only when nothing holds it (each reason is released
on its own), so one reason ending cannot undo another.

`Bridge` is the user's side and the wiring; `HostSide` is the asyncssh
session on the host's link, feeding the bridge, and keeping how the command
ended (exit status or signal) for whoever handles its close. Neither decides
anything about the session's life: that is sessions.py's.
"""

import contextlib
import re
from collections.abc import Callable

import asyncssh

from potluck.sshgateway.audit import ByteCounts

__all__ = ["HELD_SIGNALS", "Bridge", "HostSide", "watch_writes"]

_STDERR = asyncssh.EXTENDED_DATA_STDERR

#: Signals held for a host session that is not open yet; more are dropped. A signal request
#: costs the user a few bytes and is never paused like data, hence a bound.
HELD_SIGNALS = 8

#: Bytes queued for a socket past which its peer's side of the bridge stops being read, and
#: under which it is read again.
WRITE_HIGH = 1 << 20
WRITE_LOW = 256 << 10


def watch_writes(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
    congested: Callable[[], None],
    drained: Callable[[], None],
) -> None:
    """Call `congested` when more than WRITE_HIGH bytes are queued for `conn`'s socket, and
    `drained` once it is back under WRITE_LOW.

    asyncio's transport tells its protocol (the asyncssh connection) to pause writing; asyncssh
    does nothing with it, so it is taken here (module docstring says why it matters)."""
    transport = getattr(conn, "_transport", None)
    if transport is not None:
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
    conn.pause_writing = congested  # type: ignore[method-assign]
    conn.resume_writing = drained  # type: ignore[method-assign]


#: A signal name as RFC 4254 has them (`KILL`, `name@domain`); anything else is not one.
_SIGNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,31}")
#: Characters of an exit signal's message kept (hostd sends none; OpenSSH sends a short one).
MAX_SIGNAL_MESSAGE = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def exit_signal_from_host(signal: str, msg: str, lang: str) -> tuple[str, str, str]:
    """What of an exit signal from the host is recorded and passed on to the user.

    A host's hostd is its member's to change: the signal's name and message go into the
    session's `SessionEnded` and to the user's client, so a name that is not one becomes
    `UNKNOWN`, and the message is cut to MAX_SIGNAL_MESSAGE characters with no control
    characters (a terminal escape would act on the user's terminal if a client printed it).
    """
    name = signal if _SIGNAL_NAME.fullmatch(signal) else "UNKNOWN"
    text = _CONTROL.sub("?", msg[:MAX_SIGNAL_MESSAGE])
    return name, text, lang if _SIGNAL_NAME.fullmatch(lang) else ""


class Bridge:
    """The user's channel, the host's (once open), what is held in between, and the counts."""

    def __init__(self, counts: ByteCounts) -> None:
        self.counts = counts
        self.user: asyncssh.SSHServerChannel[bytes] | None = None
        self.host: asyncssh.SSHClientChannel[bytes] | None = None
        self._held: list[bytes] = []
        self._held_signals: list[str] = []
        self._user_eof = False
        #: Why the user's channel is not read now (none: it is); the same for the host's.
        self._user_holds: set[str] = set()
        self._host_holds: set[str] = set()

    def connect(self, host: asyncssh.SSHClientChannel[bytes]) -> None:
        """Bridge to the host's session: what was held goes first, then the user is read again."""
        self.host = host
        if self._host_holds:
            host.pause_reading()
        for data in self._held:
            host.write(data)
        self._held.clear()
        for signal in self._held_signals:
            host.send_signal(signal)
        self._held_signals.clear()
        if self._user_eof:
            host.write_eof()
        assert self.user is not None
        self._release_user("opening")

    def _hold_user(self, why: str) -> None:
        if not self._user_holds and self.user is not None:
            self.user.pause_reading()
        self._user_holds.add(why)

    def _release_user(self, why: str) -> None:
        if why not in self._user_holds:
            return
        self._user_holds.discard(why)
        if not self._user_holds and self.user is not None:
            self.user.resume_reading()

    def close_host(self) -> None:
        if self.host is not None:
            self.host.close()

    # From the user.

    def _open_host(self) -> asyncssh.SSHClientChannel[bytes] | None:
        """The host's channel if it still takes what the user sends.

        asyncssh closes a channel's sending side when it reads the peer's CLOSE but tells the
        session only on a later turn of the loop; the user's input read in between must be
        dropped here, since a write raising inside the user's connection would make asyncssh
        reset that whole connection (and the exit status on its way with it).
        """
        host = self.host
        return None if host is None or host.is_closing() else host

    def from_user(self, data: bytes) -> None:
        if (host := self._open_host()) is not None:
            self.counts.bytes_in += len(data)
            host.write(data)
        elif self.host is None and self.user is not None:
            self.counts.bytes_in += len(data)
            self._held.append(data)
            self._hold_user("opening")
        # else the host's side is gone: nobody to give it to, and the session is ending.

    def user_eof(self) -> None:
        self._user_eof = True
        if (host := self._open_host()) is not None:
            host.write_eof()

    def resize(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if (host := self._open_host()) is not None:
            host.change_terminal_size(width, height, pixwidth, pixheight)

    def signal(self, signal: str) -> None:
        if (host := self._open_host()) is not None:
            host.send_signal(signal)
        elif self.host is None and len(self._held_signals) < HELD_SIGNALS:
            self._held_signals.append(signal)

    def send_break(self, msec: int) -> bool:
        if (host := self._open_host()) is None:
            return False
        host.send_break(msec)
        return True

    def _hold_host(self, why: str) -> None:
        if not self._host_holds and self.host is not None:
            self.host.pause_reading()
        self._host_holds.add(why)

    def _release_host(self, why: str) -> None:
        if why not in self._host_holds:
            return
        self._host_holds.discard(why)
        if not self._host_holds and self.host is not None:
            self.host.resume_reading()

    def user_reads_slowly(self) -> None:
        # The user reads slower than the container writes: stop taking from the host.
        self._hold_host("user_window")

    def user_reads_again(self) -> None:
        self._release_host("user_window")

    def user_link_congested(self) -> None:
        self._hold_host("user_link")

    def user_link_drained(self) -> None:
        self._release_host("user_link")

    # From the host.

    def from_host(self, data: bytes, datatype: asyncssh.DataType) -> None:
        user = self.user
        if user is None or user.is_closing():
            return
        self.counts.bytes_out += len(data)
        user.write(data, datatype)

    def host_eof(self) -> None:
        user = self.user
        if user is not None and not user.is_closing():
            user.write_eof()

    def host_reads_slowly(self) -> None:
        self._hold_user("host_window")

    def host_reads_again(self) -> None:
        self._release_user("host_window")

    def host_link_congested(self) -> None:
        self._hold_user("host_link")

    def host_link_drained(self) -> None:
        self._release_user("host_link")

    # To the user, at the end.

    def exit(self, status: int) -> None:
        if self.user is not None and not self.user.is_closing():
            self.user.exit(status)

    def exit_with_signal(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        if self.user is not None and not self.user.is_closing():
            self.user.exit_with_signal(signal, core_dumped, msg, lang)

    def refuse(self, message: str) -> None:
        """Tell the user why the session ends (`potluck: ...` on stderr), exit status 255."""
        user = self.user
        if user is not None and not user.is_closing():
            with contextlib.suppress(OSError):
                user.write(f"potluck: {message}\r\n".encode(), _STDERR)
                user.exit(255)


class HostSide(asyncssh.SSHClientSession[bytes]):
    """The session on the host's link: feeds the bridge, keeps how the command ended."""

    def __init__(self, bridge: Bridge, closed: Callable[["HostSide", Exception | None], None]) -> None:
        self._bridge = bridge
        self._closed = closed
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._bridge.from_host(data, datatype)

    def eof_received(self) -> bool:
        self._bridge.host_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        name, text, lang = exit_signal_from_host(signal, msg, lang)
        self.exit_signal = (name, core_dumped, text, lang)

    def pause_writing(self) -> None:
        self._bridge.host_reads_slowly()

    def resume_writing(self) -> None:
        self._bridge.host_reads_again()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(self, exc)
