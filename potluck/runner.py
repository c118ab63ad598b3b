"""Process lifecycle for every potluck service: run until SIGTERM or SIGINT, then stop cleanly."""

import asyncio
import resource
import signal
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import structlog

from potluck.kernel.cancellation import cancel_until_done

log = structlog.get_logger(__name__)

T = TypeVar("T")


#: The soft limit of open files asked for when the hard one is unlimited.
OPEN_FILES_IF_UNLIMITED = 65_536


def raise_open_files_limit() -> int:
    """Lift this process's soft limit of open files to its hard one, and return it.

    A laptop's shell hands its processes 1,024 while allowing far more: each connection a service
    holds (API clients, pages' live streams, SSH sessions, hostd's links) is a file, and running
    out refuses everybody at once, not only whoever holds many. Go's runtime does the same."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # No kernel takes "unlimited" for open files; this many is more than any service here holds.
    wanted = OPEN_FILES_IF_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:  # e.g. a hard limit above what the kernel allows
        log.warning("process.open_files_kept", soft=soft, hard=hard, error=str(exc))
        return soft
    return wanted


async def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs `main(stop)`; SIGTERM/SIGINT set `stop`, and `main` is expected to return soon after.

    Once `main` has returned, both signals are ignored: the process is on its way out."""
    raise_open_files_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        # Said once: a service that ended on a signal (Ctrl-C on `potluck join --start`, a
        # systemd stop) otherwise left its log ending mid-work, as after a crash.
        if not stop.is_set():
            log.info("process.stopping", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig)
    try:
        await main(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            # Not back to the default action: the process is ending, and a second SIGTERM (a
            # supervisor's, or the second of two Ctrl-Cs) in its last instants killed a service
            # that was stopping cleanly, exit -15 instead of 0. SIGKILL still ends it.
            signal.signal(sig, signal.SIG_IGN)


def exit_crashed(log: Any, name: str, exc: Exception, *, hint: str) -> NoReturn:
    """Ends a service on an exception nothing in it expects (a bug, or a state such as a table
    dropped by hand): one JSON line `NAME.crashed`, the traceback in its `exception`, as every
    other line of the log is, rather than Python's bare traceback across forty lines no log
    reader parses; then exit code 1, on which a supervisor starts the service again."""
    log.exception(f"{name}.crashed", error=f"{type(exc).__name__}: {exc}", hint=hint)
    raise SystemExit(1) from None


class StoppedWhileStarting(Exception):
    """SIGTERM or SIGINT came while the service was still connecting (see `unless_stopped`)."""


async def unless_stopped(stop: asyncio.Event, step: Awaitable[T]) -> T:
    """`step`'s result, or StoppedWhileStarting once `stop` is set first (`step` cancelled).

    A service's start waits for its database and NATS, retrying NATS for as long as it takes;
    `stop` was looked at only once it served, so Ctrl-C or `kill` did nothing meanwhile."""
    doing = asyncio.ensure_future(step)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([doing, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not doing.done():
            await cancel_until_done([doing, stopper])
        else:
            await cancel_until_done([stopper])
    if doing.cancelled():
        raise StoppedWhileStarting
    return doing.result()


async def run_tasks_until(stop: asyncio.Event, *tasks: Awaitable[None]) -> None:
    """Runs `tasks` until `stop` is set or one of them fails; then cancels the rest."""
    running = [asyncio.ensure_future(t) for t in tasks]
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        await cancel_until_done([*running, stopper])
