"""The liveness watch's in-memory test (`transition_due`) against the Host aggregate's decision.

The watch reads a host's stream only when `transition_due` says so: it must say so exactly
when the aggregate, deciding on that state, would record a transition, or a transition is
missed (too strict) or the stream is read every second for nothing (too loose).
"""

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import HostDeregistered, HostLost, HostSleeping, HostSuspected
from potluck.readmodels.hosts import HostState
from potluck.registry import host
from potluck.registry.liveness import LivenessPolicy, silence_of, transition_due
from tests.unit.test_host_sleep import T0, H, registered

POLICY = LivenessPolicy(heartbeat_interval_s=5.0, suspect_after_missed=3, stranded_grace_s=3600.0)

STATES: dict[str, HostState] = {
    "online": registered(),
    "unreachable": registered(HostSuspected(host_id=H, silent_for_s=15.0)),
    "asleep": registered(HostSleeping(host_id=H)),
    "lost": registered(HostSuspected(host_id=H, silent_for_s=15.0), HostLost(host_id=H, silent_for_s=3600.0)),
    "deregistered": registered(HostDeregistered(host_id=H, by="member")),
}


@given(
    name=st.sampled_from(sorted(STATES)),
    seen_silent_s=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    since_s=st.floats(min_value=0, max_value=10_000, allow_nan=False),
)
def test_due_exactly_when_the_aggregate_records_a_transition(
    name: str, seen_silent_s: float, since_s: float
) -> None:
    """Tried: every liveness a host can have, any silence, any time since the log's transition.
    Holds: due if and only if the aggregate's went_silent records an event on that state."""
    state = STATES[name]
    now = T0 + timedelta(seconds=since_s)
    decided = host.went_silent(
        state,
        silence_of(state, seen_silent_s, now),
        suspect_after_s=POLICY.suspect_after_s,
        stranded_grace_s=POLICY.stranded_grace_s,
    )
    assert transition_due(state, seen_silent_s, now, POLICY) == bool(decided)


def test_a_suspected_host_is_not_due_again_until_its_grace() -> None:
    """Tried: an unreachable host, silent long past the suspect time but within the grace.
    Holds: not due (no stream read a second for it); due once the grace is reached."""
    state = STATES["unreachable"]
    # Online since T0 by the log, an hour before: silent 15 s by the beats (silence_of).
    assert transition_due(STATES["online"], 15.0, T0 + timedelta(hours=1), POLICY)
    assert not transition_due(state, 600.0, T0, POLICY)
    assert transition_due(state, 3600.0, T0, POLICY)
    assert not transition_due(STATES["lost"], 1e6, T0, POLICY)
