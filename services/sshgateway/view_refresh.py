"""Reading the log to its head for a login the gateway's view cannot admit yet.

The gateway's view follows the log as Postgres notifies it (libs/events/follower.py). A
login that arrives before the view has folded its allocation found no allocation and was
refused like a wrong key ("Permission denied (publickey)"): right after `potluck alloc
create` answered, in the first moments after the gateway started (before its listener is
connected), or while a lost notification waits for the follower's poll (2 s). What was
refused was a login the log already admitted.

So before a key is refused, the login reads the log itself to its head (`refresh`): a key is
refused only by what the log held when the login was tried. Logins that arrive while a
read is under way wait for the next read rather than each starting their own; a read that
began before a login arrived does not count for it, since its allocation may have been
written after that read's query. The view is folded from one place at a time: `Fold`
skips what it has folded, so the follower meeting these events again changes nothing.

A read that fails (the database away) or takes longer than `timeout_s` leaves the view as
it was, and the key is judged by it: the login is refused as it was before, and logged.
"""

import asyncio

import structlog

from potluck.events import EventStore, Fold
from potluck.events.follower import TRANSIENT_DB_ERRORS

__all__ = ["ViewRefresh"]

log = structlog.get_logger(__name__)


class ViewRefresh:
    """One read of the log to its head at a time, shared by the logins waiting for it."""

    def __init__(self, fold: Fold, store: EventStore, *, timeout_s: float = 2.0) -> None:
        self._fold = fold
        self._store = store
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        #: Reads begun so far, and the number of the last one that ended having read to the head:
        #: a login needs one that began after it arrived and ended so.
        self._begun = 0
        self._read = 0

    async def refresh(self) -> bool:
        """Fold the log up to at least where it stood on this call; False if it could not be read."""
        arrived_after = self._begun
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._lock:
                    if self._read > arrived_after:
                        # A read begun after this login arrived has just ended while it waited.
                        return True
                    self._begun += 1
                    number = self._begun
                    await self._fold.catch_up(self._store)
                    self._read = number
        except TRANSIENT_DB_ERRORS as exc:  # a timeout among them
            log.warning(
                "login.log_unread",
                position=self._fold.position,
                error=str(exc) or type(exc).__name__,
                hint="the key was judged by the gateway's view as it stood; check the database",
            )
            return False
        return True
