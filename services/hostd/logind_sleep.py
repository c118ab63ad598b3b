"""systemd-logind's word that the machine goes to sleep, heard on the system D-Bus.

logind emits `org.freedesktop.login1.Manager.PrepareForSleep(true)` just before
a suspend and `PrepareForSleep(false)` once the machine is back. hostd hears
both (SleepWatch.announce, SleepWatch.logind_woke), so the registry shows the
host asleep at once instead of after missed beats.

A signal alone gives us no time: the machine may be asleep before the notice
leaves. So hostd holds a logind *delay* inhibitor lock (`Inhibit("sleep", ...,
"delay")`, a file descriptor): logind waits, up to its InhibitDelayMaxSec, until
every such lock is closed. hostd closes it once the announcement is answered
(at most ANNOUNCE_TIMEOUT_S), and takes a new one on waking. Without the lock
(polkit may refuse it) the announcement is a race it usually wins.

No D-Bus here (no socket, no logind on it): one info line, and hostd runs as
before; the clocks still tell a sleep on waking. The client is dbus-fast's
asyncio MessageBus, used at the message level: two calls and one signal.
"""

import asyncio
import contextlib
import os

import structlog
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from potluck.hostd.sleep_watch import SleepWatch
from potluck.kernel.background import BackgroundTasks

__all__ = ["DEFAULT_SYSTEM_BUS", "LOGIND", "LogindSleep", "listen_to_logind", "system_bus_address"]

log = structlog.get_logger(__name__)

DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
PREPARE_FOR_SLEEP = (
    f"type='signal',interface='{MANAGER}',member='PrepareForSleep',path='{LOGIND_PATH}',sender='{LOGIND}'"
)
#: Connecting, authenticating, and each call: a bus that does not answer in this long is not there.
CALL_TIMEOUT_S = 5.0


def system_bus_address(configured: str | None) -> str | None:
    """The bus to listen on: the configured one ("" for none), DBUS_SYSTEM_BUS_ADDRESS, the usual socket."""
    if configured is not None:
        return configured or None
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


async def _call(bus: MessageBus, msg: Message) -> Message:
    async with asyncio.timeout(CALL_TIMEOUT_S):
        reply = await bus.call(msg)
    if reply.message_type == MessageType.ERROR:
        raise DBusFastError(f"{reply.error_name}: {reply.body[0] if reply.body else ''}")
    return reply


class LogindSleep:
    """One connection to the system bus: the PrepareForSleep match and the delay lock."""

    def __init__(self, bus: MessageBus, watch: SleepWatch) -> None:
        self.bus = bus
        self.watch = watch
        self.lock_fd: int | None = None
        self._tasks = BackgroundTasks()

    async def logind_present(self) -> bool:
        reply = await _call(
            self.bus,
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="NameHasOwner",
                signature="s",
                body=[LOGIND],
            ),
        )
        return bool(reply.body[0])

    async def start(self) -> None:
        self.bus.add_message_handler(self._on_message)
        await _call(
            self.bus,
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[PREPARE_FOR_SLEEP],
            ),
        )
        await self.take_lock()

    async def take_lock(self) -> None:
        """A delay inhibitor lock: logind waits for us to close it before the machine sleeps."""
        if self.lock_fd is not None:
            return
        try:
            reply = await _call(
                self.bus,
                Message(
                    destination=LOGIND,
                    path=LOGIND_PATH,
                    interface=MANAGER,
                    member="Inhibit",
                    signature="ssss",
                    body=["sleep", "potluck-hostd", "tell the pool this machine goes to sleep", "delay"],
                ),
            )
        except (DBusFastError, TimeoutError) as exc:
            log.info(
                "hostd.logind_no_delay_lock",
                error=str(exc) or type(exc).__name__,
                hint="sleep is still announced, without logind waiting for it",
            )
            return
        fds = list(reply.unix_fds)
        index = reply.body[0] if reply.body else 0
        if not fds or not 0 <= index < len(fds):
            log.info("hostd.logind_no_delay_lock", error="logind sent no file descriptor")
            return
        self.lock_fd = fds.pop(index)
        for extra in fds:
            os.close(extra)

    def release_lock(self) -> None:
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type != MessageType.SIGNAL
            or msg.interface != MANAGER
            or msg.member != "PrepareForSleep"
        ):
            return
        if msg.path != LOGIND_PATH or msg.signature != "b":
            return
        going = bool(msg.body[0])
        self._tasks.start(self._going_to_sleep() if going else self._back())

    async def _going_to_sleep(self) -> None:
        log.info("hostd.logind_prepare_for_sleep")
        try:
            await self.watch.announce()
        finally:
            self.release_lock()

    async def _back(self) -> None:
        log.info("hostd.logind_resumed")
        await self.take_lock()
        await self.watch.logind_woke()

    def close(self) -> None:
        self.release_lock()
        self._tasks.cancel()
        self.bus.disconnect()


async def listen_to_logind(watch: SleepWatch, address: str | None, *, retry_s: float = 30.0) -> None:
    """Hear logind's PrepareForSleep for as long as hostd runs; without D-Bus or logind, return
    after one info line (hostd runs as before)."""
    if address is None:
        log.info("hostd.logind_off", hint="sleep.dbus_address is empty: sleep is noticed on waking only")
        return
    first = True
    while True:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
        except (OSError, DBusFastError, TimeoutError, EOFError) as exc:
            if first:
                log.info(
                    "hostd.dbus_unavailable",
                    address=address,
                    error=str(exc) or type(exc).__name__,
                    hint="no system D-Bus here: sleep is noticed on waking, from the clocks",
                )
                return
            await asyncio.sleep(retry_s)
            continue
        logind = LogindSleep(bus, watch)
        try:
            if not await logind.logind_present():
                if first:
                    log.info(
                        "hostd.logind_unavailable",
                        address=address,
                        hint="no systemd-logind on the system bus: sleep is noticed on waking (clocks)",
                    )
                    return
            else:
                await logind.start()
                log.info("hostd.logind_listening", address=address, delay_lock=logind.lock_fd is not None)
                first = False
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
                log.warning(
                    "hostd.dbus_disconnected", address=address, hint="listening again when it is back"
                )
        except (DBusFastError, TimeoutError, OSError, EOFError) as exc:
            log.warning("hostd.dbus_failed", address=address, error=str(exc) or type(exc).__name__)
        finally:
            logind.close()
        if first:
            return
        await asyncio.sleep(retry_s)
