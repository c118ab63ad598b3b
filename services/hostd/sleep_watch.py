"""hostd's side of sleep: announce it, notice the wake, tell the registry, re-sync.

Two sources say the machine sleeps or slept, and this module is where they meet:

- logind (logind_sleep.py) announces the sleep before it happens (`announce`) and
  says when the machine is back (`logind_woke`);
- the clocks (sleep_clock.py), looked at every `check_interval_s`, show on waking
  that the machine was suspended, announced or not (`run`).

Whichever sees the wake first tells it; the other finds nothing left to tell,
since both read the same clocks and every look starts from the last. Once hostd
has announced the sleep it stops beating (`awake`) until the wake: beats sent in
the second before the suspend would tell the registry the host is up again.

Announcing must be quick (logind waits for us only a few seconds, and we hold
its delay lock for at most `ANNOUNCE_TIMEOUT_S`); telling the wake is patient:
the notice is repeated until the registry answers, since the bus is often still
reconnecting when a laptop opens its lid. Then hostd re-syncs as after a
reconnect (register, desired-state snapshot): allocations given up while it
slept are stopped there.
"""

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
import structlog

from potluck.contracts.messages import Reply, SleepNotice
from potluck.contracts.subjects import SLEEP
from potluck.events.bus import TRANSIENT_BUS_ERRORS
from potluck.hostd.sleep_clock import SleepClock

__all__ = ["ANNOUNCE_TIMEOUT_S", "Request", "SleepWatch"]

log = structlog.get_logger(__name__)

#: How long an announcement may take: the machine is about to sleep and logind waits for us.
ANNOUNCE_TIMEOUT_S = 1.0
#: Announced, then awake this long (monotonic, so a real suspend does not count) with no wake
#: said: the sleep did not happen after all (a cancelled suspend whose signal we missed).
NO_SLEEP_AFTER_S = 60.0

#: On waking, beats start again once the wake is told, or after this long at the latest.
BEATS_WAIT_FOR_WAKE_S = 10.0

#: Ask the registry: subject, payload, timeout in seconds -> its reply.
Request = Callable[[str, bytes, float], Awaitable[Reply]]

_BUS_AWAY: tuple[type[BaseException], ...] = (*TRANSIENT_BUS_ERRORS, nats.errors.NoRespondersError)


class SleepWatch:
    def __init__(
        self,
        host_id: str,
        request: Request,
        clock: SleepClock,
        *,
        on_woke: Callable[[], None] = lambda: None,
        check_interval_s: float = 1.0,
    ) -> None:
        self.host_id = host_id
        self.request = request
        self.clock = clock
        self.on_woke = on_woke
        self.check_interval_s = check_interval_s
        #: Set while hostd should beat: cleared from the announcement to the wake.
        self.awake = asyncio.Event()
        self.awake.set()
        #: When the sleep was announced: the loop's clock (awake time) and the boot-time clock.
        self._announced_at: float | None = None
        self._boot_at_announce = 0.0

    @property
    def subject(self) -> str:
        return f"{SLEEP}.{self.host_id}"

    async def run(self) -> None:
        """Look at the clocks every `check_interval_s`: a suspend seen there is a wake to tell."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.check_interval_s)
            slept = self.clock.woke()
            if slept is not None:
                log.info("hostd.woke", source="clocks", slept_s=round(slept, 3))
                await self._woke(self._away_for(slept))
            elif self._announced_at is not None and loop.time() - self._announced_at > NO_SLEEP_AFTER_S:
                log.warning(
                    "hostd.sleep_did_not_happen",
                    after_s=NO_SLEEP_AFTER_S,
                    hint="logind announced a sleep and never said it ended; beating again",
                )
                await self._woke(self._away_for(0.0))

    async def announce(self) -> bool:
        """The machine is about to sleep: stop beating and say so, within ANNOUNCE_TIMEOUT_S.

        True when the registry recorded it (or had it already). Not answered in time, the
        registry will find the host silent instead: unreachable, which waits all the same.
        """
        self.awake.clear()
        self._announced_at = asyncio.get_running_loop().time()
        self._boot_at_announce = self.clock.now()
        self.clock.slept()  # the wake is measured from here
        try:
            reply = await self.request(
                self.subject, SleepNotice().model_dump_json().encode(), ANNOUNCE_TIMEOUT_S
            )
        except _BUS_AWAY as exc:
            log.warning(
                "hostd.sleep_not_announced",
                error=repr(exc),
                hint="the registry will see the host unreachable instead; its work waits all the same",
            )
            return False
        if not reply.ok:
            log.warning("hostd.sleep_not_announced", error=reply.error)
            return False
        log.info("hostd.sleep_announced", recorded=reply.data.get("recorded"))
        return True

    async def logind_woke(self) -> None:
        """logind says the machine is back. Told at once if we announced the sleep; otherwise
        only if the clocks show a suspend (they may already have told it)."""
        if self._announced_at is not None:
            self.clock.slept()
            await self._woke(self._away_for(0.0))
            return
        slept = self.clock.woke()
        if slept is not None:
            log.info("hostd.woke", source="logind", slept_s=round(slept, 3))
            await self._woke(slept)

    def _away_for(self, slept: float) -> float:
        """How long the pool has had us asleep: since the announcement when there was one
        (boot-time clock: the suspend counts), else what the clocks saw suspended."""
        if self._announced_at is None:
            return slept
        return max(slept, self.clock.now() - self._boot_at_announce)

    async def _woke(self, slept_s: float) -> None:
        self._announced_at = None
        telling = asyncio.ensure_future(self._tell_woke(slept_s))
        # Beats wait for the wake to be told (a beat first would record a plain recovery and
        # lose how long it slept), but not for long: a registry away does not hear either.
        await asyncio.wait({telling}, timeout=BEATS_WAIT_FOR_WAKE_S)
        self.awake.set()
        await telling
        self.on_woke()

    async def _tell_woke(self, slept_s: float) -> None:
        """SleepNotice(slept_s) until the registry answers: the bus may be reconnecting."""
        payload = SleepNotice(slept_s=round(slept_s, 3)).model_dump_json().encode()
        backoff = 0.2
        while True:
            try:
                reply = await self.request(self.subject, payload, 5.0)
            except _BUS_AWAY as exc:
                log.info("hostd.wake_not_told_yet", error=repr(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if reply.ok:
                log.info("hostd.wake_told", slept_s=round(slept_s, 3), recorded=reply.data.get("recorded"))
            else:
                # Refused (e.g. not registered any more): the re-sync that follows says why.
                log.warning("hostd.wake_refused", error=reply.error)
            return
