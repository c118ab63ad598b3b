"""A session's window changes and signals, passed to its process one Docker call at a time.

Each window change is a `POST /exec/<id>/resize` and each signal an exec
inspect and a kill: calls to the engine, each with its own socket. A client
sends window changes and signals as fast as it likes (an SSH message costs it
a few bytes), and one call started per message let a single session open
thousands of engine sockets at once (5,000 signals: 4,800 file descriptors in
hostd, another user's session waiting 8 s to start), on the way to running
hostd out of descriptors for every session on the host. So each session has
at most one call in flight:

- window changes are coalesced: only the size asked last matters, so while a
  resize runs, newer sizes replace each other and the last one is applied
  next (what a terminal shows after a burst of drags is the final size);
- signals queue in order, at most `MAX_PENDING_SIGNALS` of them; one past
  that is dropped (a process sent that many signals faster than the engine
  can deliver them gains nothing from more), and counted in the log once.
"""

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from potluck.hostd.exec_bridge import SessionProcess
from potluck.hostd.exec_errors import ExecError

__all__ = ["MAX_PENDING_SIGNALS", "SessionControls"]

log = structlog.get_logger(__name__)

#: Signals of one session waiting for delivery; more are dropped.
MAX_PENDING_SIGNALS = 8
#: Characters of a signal's name written to the log.
MAX_SIGNAL_NAME = 32

Start = Callable[[Coroutine[Any, Any, None]], object]


class SessionControls:
    """Window changes and signals for one session's process (see the module docstring)."""

    def __init__(self, process: SessionProcess, start: Start) -> None:
        self._process = process
        self._start = start
        self._size: tuple[int, int] | None = None
        self._resizing = False
        self._signals: deque[str] = deque()
        self._signalling = False
        self.signals_dropped = 0
        self._undelivered_logged = False

    def resize(self, width: int, height: int) -> None:
        self._size = (width, height)
        if not self._resizing:
            self._resizing = True
            self._start(self._resize_until_current())

    async def _resize_until_current(self) -> None:
        try:
            while self._size is not None:
                width, height = self._size
                self._size = None
                try:
                    await self._process.resize(width, height)
                except ExecError as exc:
                    log.debug("link.resize_failed", exec_id=self._process.exec_id[:12], error=str(exc))
        finally:
            self._resizing = False

    def signal(self, name: str) -> None:
        if len(self._signals) >= MAX_PENDING_SIGNALS:
            self.signals_dropped += 1
            if self.signals_dropped == 1:
                log.info(
                    "link.signals_dropped",
                    exec_id=self._process.exec_id[:12],
                    pending=len(self._signals),
                    hint="the session sends signals faster than the engine delivers them",
                )
            return
        self._signals.append(name)
        if not self._signalling:
            self._signalling = True
            self._start(self._deliver_signals())

    async def _deliver_signals(self) -> None:
        try:
            while self._signals:
                name = self._signals.popleft()
                try:
                    delivered = await self._process.signal(name)
                except ExecError as exc:
                    log.debug("link.signal_failed", exec_id=self._process.exec_id[:12], error=str(exc))
                    continue
                if not delivered and not self._undelivered_logged:
                    # Once a session: a process that ended makes every later signal undeliverable.
                    self._undelivered_logged = True
                    # The name is the user's (the gateway relays only short ones): bounded all the same.
                    exec_id = self._process.exec_id[:12]
                    log.info("link.signal_not_delivered", signal=name[:MAX_SIGNAL_NAME], exec_id=exec_id)
        finally:
            self._signalling = False
