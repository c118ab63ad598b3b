"""Leaving and revocation are final, over any sequence of commands afterwards (hypothesis).

A host is registered (and maybe paused, silent or deregistered), then leaves or is revoked.
Whatever it or an operator asks next (registrations with anything changed, every control,
beats, silences of any length, a second leave or revocation), decided by the real aggregate
(host.py) on the state the registry folds (`evolve`), the host stays gone: no command brings
it back, and everything but a revocation of a host that left records nothing or is refused
with HOST_LEFT / HOST_REVOKED.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostEnrolled,
    HostLeft,
    HostLost,
    HostPaused,
    HostRevoked,
)
from potluck.contracts.messages import ControlHost, RegisterHost
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, evolve
from potluck.registry import host

H = "h-1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)

requests = st.builds(
    RegisterHost,
    donated=st.sampled_from([Capacity(cpus=c, memory_bytes=1 << 30, disk_bytes=1 << 30) for c in (1, 2)]),
    labels=st.sampled_from([{}, {"gpu": "yes"}]),
    engine=st.just(ENGINE),
    hostd_version=st.sampled_from(["1.0", "1.1"]),
    ssh_host_key=st.sampled_from(["", "ssh-ed25519 AAAA"]),
    contract=st.just(CONTRACT_VERSION),
)
before = st.lists(
    st.sampled_from(
        [
            HostPaused(host_id=H, by="member"),
            HostLost(host_id=H, silent_for_s=400),
            HostDeregistered(host_id=H, by="operator"),
        ]
    ),
    max_size=2,
)
gone_by = st.sampled_from(
    [HostLeft(host_id=H, by="member"), HostLeft(host_id=H, by="operator"), HostRevoked(host_id=H, by="olga")]
)


@dataclass(frozen=True)
class Register:
    req: RegisterHost


@dataclass(frozen=True)
class Control:
    action: str
    by: str


@dataclass(frozen=True)
class Silence:
    seconds: float


@dataclass(frozen=True)
class Beat:
    pass


@dataclass(frozen=True)
class Revoke:
    reason: str


commands = st.lists(
    st.one_of(
        st.builds(Register, requests),
        st.builds(
            Control,
            st.sampled_from(["pause", "resume", "drain", "deregister", "leave"]),
            st.sampled_from(["member", "operator"]),
        ),
        st.builds(Silence, st.sampled_from([0.0, 15.0, 300.0, 10_000.0])),
        st.just(Beat()),
        st.builds(Revoke, st.sampled_from(["", "stolen"])),
    ),
    max_size=12,
)


def fold(state: HostState | None, events: list[Event]) -> HostState:
    version = state.version if state else 0
    for event in events:
        version += 1
        state = evolve(state, event, version, T0)
    assert state is not None
    return state


def decide(state: HostState, command: object) -> list[Event]:
    match command:
        case Register(req):
            return host.register(state, H, req)
        case Control(action, by):
            return host.control(state, H, ControlHost.model_validate({"action": action}), by, now=T0)  # type: ignore[arg-type]
        case Silence(seconds):
            return host.went_silent(state, seconds, suspect_after_s=15.0, stranded_grace_s=300.0)
        case Beat():
            return host.beat_returned(state)
        case Revoke(reason):
            return host.revoke(state, H, "piet", reason)
    raise AssertionError(command)


@given(first=requests, history=before, gone=gone_by, then=commands)
def test_nothing_brings_a_gone_host_back(
    first: RegisterHost, history: list[Event], gone: Event, then: list[object]
) -> None:
    state = fold(None, [HostEnrolled(host_id=H, name="laptop", nkey="UKEY")])
    state = fold(state, [*host.register(state, H, first), *history, gone])
    for command in then:
        events = decide_or_refusal(state, command)
        if isinstance(events, str):
            assert events in ("HOST_LEFT", "HOST_REVOKED"), (command, events)
            continue
        # The one fact still possible: a machine that left is revoked (stolen afterwards).
        left_then_revoked = state.admin == "left" and isinstance(command, Revoke)
        assert events == [] or (left_then_revoked and [type(e) for e in events] == [HostRevoked]), (
            command,
            events,
        )
        state = fold(state, events)
        assert state.gone
        assert not state.registered
        assert not state.schedulable
        assert state.status in ("left", "revoked")


def decide_or_refusal(state: HostState, command: object) -> list[Event] | str:
    """The events decided, or the code of the refusal."""
    try:
        return decide(state, command)
    except Rejected as refused:
        return refused.code
