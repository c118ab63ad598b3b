"""Heartbeats in, liveness transitions out: HostSuspected (unreachable), HostLost, HostRecovered.

Beats are not events, so they only move the last-seen clock (liveness.py);
the watch compares each registered host's silence with the policy and lets
the Host aggregate decide, on the host's stream, whether that is a
transition. The view says which hosts to look at: the aggregate's decision
is first taken on the view's state, in memory, and the stream is read (and
appended to, at the version read) only when that says a transition is due.
So a watch over thousands of hosts, many of them already unreachable, reads
the database once per transition, not once per silent host a second. The
stream has the last word, so a beat and its HostRecovered that land
meanwhile are not undone.

A transition that cannot be recorded now (other writers won every attempt)
is logged and tried again at the next look: the watch never stops.
"""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from potluck.contracts.messages import Heartbeat
from potluck.contracts.subjects import host_of
from potluck.events import TRANSIENT_DB_ERRORS, Event, EventStore
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.kernel.rejections import Rejected, first_error
from potluck.readmodels.hosts import HostState, HostsView
from potluck.registry import host as aggregate
from potluck.registry.host_rate import log_refusal
from potluck.registry.liveness import LastSeen, LivenessPolicy, silence_of, transition_due
from potluck.registry.repository import Decision, decide_on_host

__all__ = ["MAX_BEAT_BYTES", "LivenessWatch", "beat_rate"]

log = structlog.get_logger(__name__)

METADATA = {"actor": "registry"}

#: A beat hostd sends is some 60 bytes of JSON: anything much larger is refused unparsed.
MAX_BEAT_BYTES = 1024
#: Messages on a host's heartbeat subject that are no beat are logged ten at once, then one a second.
BAD_BEAT_LOG_RATE = RatePolicy(per_s=1.0, burst=10)


def beat_rate(policy: LivenessPolicy) -> RatePolicy:
    """Four times the pace hostd beats at, and a burst of 20: reconnects and a slow loop pass."""
    return RatePolicy(per_s=4 / policy.heartbeat_interval_s, burst=20)


class LivenessWatch:
    def __init__(
        self, store: EventStore, view: HostsView, policy: LivenessPolicy, rates: KeyRates | None = None
    ) -> None:
        self.store = store
        self.view = view
        self.policy = policy
        self.last_seen = LastSeen()
        #: Beats per host: a few times the pace hostd beats at, so only a host in a loop is refused.
        self.rates = rates or KeyRates(beat_rate(policy))
        #: Messages on a host's heartbeat subject that are no beat, per host (never charged to its rate).
        self.bad_beats: Counter[str] = Counter()
        self._bad_beats_logged = KeyRates(BAD_BEAT_LOG_RATE)

    def start_clock(self) -> None:
        """Count silence from now: every host gets a fresh grace period (e.g. after a restart)."""
        self.last_seen = LastSeen()

    async def on_heartbeat(self, msg: Msg) -> None:
        host_id = host_of(msg.subject)
        # Read before the rate is charged: what is not a beat of the host's (JetStream's answers to
        # another host land on this subject too) must not use up the host's rate and have its own
        # beats ignored. Reading costs little: anything past MAX_BEAT_BYTES is refused unparsed.
        if not self._is_beat(host_id, msg):
            return
        verdict = self.rates.check(host_id, time.monotonic())
        if not verdict.allowed:
            # Ignored, not counted as a beat: a host beating in a loop is not thereby more alive.
            log_refusal(self.rates, verdict, host_id, msg.subject)
            return
        self.last_seen.beat(host_id)
        state = self.view.hosts.get(host_id)
        if state is not None and state.liveness in ("unreachable", "asleep", "lost"):
            now = datetime.now(UTC)
            await self._decide(host_id, lambda s: aggregate.beat_returned(s, now) if s else [])

    def _is_beat(self, host_id: str, msg: Msg) -> bool:
        """Is `msg` a heartbeat as hostd sends them: a small Heartbeat, with no reply subject and
        no headers? JetStream's deliveries carry a reply subject ($JS.ACK...) and its status
        answers headers; its other answers do not read as a Heartbeat. Anything else is counted
        per host and logged sparingly."""
        if msg.reply or msg.headers:
            why = "a reply subject or headers, as JetStream's answers carry and beats never do"
        elif len(msg.data) > MAX_BEAT_BYTES:
            why = f"{len(msg.data)} bytes, where a beat is under {MAX_BEAT_BYTES}"
        else:
            try:
                Heartbeat.model_validate_json(msg.data)
                return True
            except ValidationError as exc:
                why = first_error(exc)
        self.bad_beats[host_id] += 1
        if self._bad_beats_logged.check(host_id, time.monotonic()).allowed:
            log.warning(
                "registry.bad_heartbeat",
                host_id=host_id,
                error=why,
                refused=self.bad_beats[host_id],
                hint="not counted as the host's beat; another host can have JetStream answer onto "
                "this subject, so it need not be this host's doing",
            )
        return False

    async def run(self) -> None:
        """Look at every registered host's silence, twice a heartbeat interval (at least once a second)."""
        interval = min(1.0, self.policy.heartbeat_interval_s / 2)
        while True:
            await asyncio.sleep(interval)
            for host_id in self.due():
                await self._decide(host_id, self._went_silent(host_id))

    def due(self) -> list[str]:
        """The hosts whose silence, as the view has folded them, makes a transition due now.

        Taken in memory; the stream is read to decide for real. The view may lag the stream:
        a transition appended and not yet folded is due again (and the stream then decides
        nothing), and one due only on events not yet folded waits for the fold (a moment),
        never longer: the view catches up with every append.
        """
        now = datetime.now(UTC)
        return [
            host_id
            for host_id, state in list(self.view.hosts.items())
            if transition_due(state, self.last_seen.silent_for(host_id), now, self.policy)
        ]

    def _went_silent(self, host_id: str) -> Decision:
        # The silence is measured again when deciding, after the stream is read: a beat (and its
        # HostRecovered) may have come in meanwhile, and a figure taken before it would declare
        # lost a host that has just recovered.
        def decide(state: HostState | None) -> list[Event]:
            if state is None:
                return []
            return aggregate.went_silent(
                state,
                silence_of(state, self.last_seen.silent_for(host_id), datetime.now(UTC)),
                suspect_after_s=self.policy.suspect_after_s,
                stranded_grace_s=self.policy.stranded_grace_s,
            )

        return decide

    async def _decide(self, host_id: str, decide: Decision) -> None:
        try:
            await decide_on_host(
                self.store, host_id, decide, METADATA, known=lambda: self.view.hosts.get(host_id)
            )
        except Rejected as exc:
            log.warning("registry.liveness_not_recorded", host_id=host_id, code=exc.code, error=exc.message)
        except TRANSIENT_DB_ERRORS as exc:
            # The database is away: the transition is decided again at the next look.
            log.error(
                "registry.liveness_not_recorded",
                host_id=host_id,
                error=str(exc) or type(exc).__name__,
                hint="check that Postgres is up; the registry tries again",
            )
