"""The Host aggregate against a reference model, over any sequence of commands (hypothesis).

The registry decides on the state it folds from the host's stream: decide,
append, fold, decide again. The machine does exactly that with the real
aggregate (host.py) and the real fold (`evolve`), and holds every step to a
model written from the rules alone (a few fields and a table of what each
command does), so the two implementations keep each other honest:

- a command is refused exactly when the model says so, with the model's code;
- otherwise the events recorded are the ones the model names, and folding
  them gives the state the model holds;
- a command repeated right after it took effect records nothing (except
  deregistering, which leaves nothing to repeat on).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import Actor
from potluck.contracts.messages import ControlHost, RegisterHost, SleepNotice
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, evolve
from potluck.registry import host

H = "h-1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SUSPECT_S, LOST_S = 15.0, 300.0
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)

requests = st.builds(
    RegisterHost,
    donated=st.sampled_from([Capacity(cpus=c, memory_bytes=1 << 30, disk_bytes=1 << 30) for c in (1, 2)]),
    labels=st.sampled_from([{}, {"gpu": "yes"}]),
    allowed_images=st.sampled_from([[], ["potluck-test:1"]]),
    engine=st.just(ENGINE),
    hostd_version=st.sampled_from(["1.0", "1.1"]),
    ssh_host_key=st.sampled_from(["", "ssh-ed25519 AAAA"]),
    contract=st.just(CONTRACT_VERSION),
)
actions = st.sampled_from(["pause", "resume", "drain", "deregister"])
actors = st.sampled_from(["member", "operator"])
silences = st.sampled_from([0.0, SUSPECT_S - 0.5, SUSPECT_S, SUSPECT_S + 1, LOST_S, LOST_S + 50])


@dataclass
class Model:
    """What the rules say about one host: the fields decisions depend on."""

    enrolled: bool = False
    registered: bool = False
    admin: str = "active"
    liveness: str | None = None
    offered: RegisterHost | None = None
    grace_s: float = 0.0
    slept_s: float | None = None
    history: list[str] = field(default_factory=list)

    def register(self, req: RegisterHost) -> list[str] | str:
        if not self.enrolled:
            return "NOT_ENROLLED"
        if self.registered and self.offered == req:
            if self.liveness == "online":
                return []
            self.liveness = "online"
            return ["HostRecovered"]
        self.registered, self.offered, self.liveness = True, req, "online"
        if self.admin == "deregistered":
            self.admin = "active"
        return ["HostRegistered"]

    def control(self, action: str, grace_s: float) -> list[str] | str:
        if not self.enrolled:
            return "NOT_ENROLLED"
        if not self.registered:
            return "NOT_REGISTERED"
        if action == "deregister":
            self.registered, self.admin, self.liveness = False, "deregistered", None
            return ["HostDeregistered"]
        target, recorded = {
            "pause": ("paused", "HostPaused"),
            "resume": ("active", "HostResumed"),
            "drain": ("draining", "HostDrainStarted"),
        }[action]
        # Every event folds at T0 and the aggregate decides at T0: a drain's grace is all left.
        if self.admin == target and not (action == "drain" and grace_s < self.grace_s):
            return []
        self.admin = target
        if action == "drain":
            self.grace_s = grace_s
        return [recorded]

    def went_silent(self, seconds: float) -> list[str]:
        if not self.registered:
            return []
        if self.liveness in ("online", "unreachable", "asleep") and seconds >= LOST_S:
            self.liveness = "lost"
            return ["HostLost"]
        if self.liveness == "online" and seconds >= SUSPECT_S:
            self.liveness = "unreachable"
            return ["HostSuspected"]
        return []

    def beat_returned(self) -> list[str]:
        if self.registered and self.liveness in ("unreachable", "asleep", "lost"):
            self.liveness = "online"
            return ["HostRecovered"]
        return []

    def sleep_noticed(self, slept_s: float | None) -> list[str] | str:
        if not self.enrolled:
            return "NOT_ENROLLED"
        if not self.registered:
            return "NOT_REGISTERED"
        if slept_s is None:
            if self.liveness == "asleep":
                return []
            self.liveness = "asleep"
            return ["HostSleeping"]
        if self.liveness == "online" and self.slept_s == slept_s:
            return []  # the same notice again: hostd repeats it until answered
        self.liveness, self.slept_s = "online", slept_s
        return ["HostWoke"]


class HostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.state: HostState | None = None
        self.version = 0

    def _record(self, events: list[Event]) -> None:
        for event in events:
            self.version += 1
            self.state = evolve(self.state, event, self.version, T0)

    def _decide(self, decide: Callable[[], list[Event]], expected: list[str] | str) -> list[Event]:
        """Run the aggregate's decision; hold it to the model's (a refusal code, or the events' types)."""
        if isinstance(expected, str):
            with pytest.raises(Rejected) as refused:
                decide()
            assert refused.value.code == expected
            return []
        events: list[Event] = decide()
        assert [type(e).type_name for e in events] == expected
        self._record(events)
        return events

    @rule()
    def enroll(self) -> None:
        expected: list[str] | str = "HOST_EXISTS" if self.model.enrolled else ["HostEnrolled"]
        self.model.enrolled = True
        self._decide(lambda: host.enroll(self.state, H, "laptop", "UKEY"), expected)

    @rule(req=requests, again=st.booleans())
    def register(self, req: RegisterHost, again: bool) -> None:
        self._decide(lambda: host.register(self.state, H, req), self.model.register(req))
        if again and self.model.enrolled:
            self._decide(lambda: host.register(self.state, H, req), self.model.register(req))
            assert host.register(self.state, H, req) == []

    @rule(action=actions, by=actors, grace=st.sampled_from([0.0, 5.0]), again=st.booleans())
    def control(self, action: str, by: Actor, grace: float, again: bool) -> None:
        cmd = ControlHost.model_validate({"action": action, "grace_s": grace})
        expected = self.model.control(action, grace)
        events = self._decide(lambda: host.control(self.state, H, cmd, by, now=T0), expected)
        assert all(getattr(e, "by", by) == by for e in events)
        if again and events and action != "deregister":
            assert host.control(self.state, H, cmd, by, now=T0) == []

    @precondition(lambda self: self.state is not None)
    @rule(seconds=silences)
    def went_silent(self, seconds: float) -> None:
        assert self.state is not None
        state = self.state
        self._decide(
            lambda: host.went_silent(state, seconds, suspect_after_s=SUSPECT_S, stranded_grace_s=LOST_S),
            self.model.went_silent(seconds),
        )

    @precondition(lambda self: self.state is not None)
    @rule()
    def beat_returned(self) -> None:
        assert self.state is not None
        state = self.state
        self._decide(lambda: host.beat_returned(state), self.model.beat_returned())

    @rule(slept_s=st.sampled_from([None, None, 0.5, 30.0, 40000.0]), again=st.booleans())
    def sleep_noticed(self, slept_s: float | None, again: bool) -> None:
        notice = SleepNotice(slept_s=slept_s)
        events = self._decide(
            lambda: host.sleep_noticed(self.state, H, notice), self.model.sleep_noticed(slept_s)
        )
        if again and events:
            assert host.sleep_noticed(self.state, H, notice) == []

    @invariant()
    def folded_state_is_the_models(self) -> None:
        if not self.model.enrolled:
            assert self.state is None
            return
        state = self.state
        assert state is not None
        assert (state.registered, state.admin, state.liveness) == (
            self.model.registered,
            self.model.admin,
            self.model.liveness,
        )
        assert state.version == self.version
        assert state.slept_s == self.model.slept_s
        assert state.waiting == (self.model.registered and self.model.liveness in ("asleep", "unreachable"))
        assert state.schedulable == (
            self.model.registered and self.model.admin == "active" and self.model.liveness == "online"
        )
        if self.model.admin == "draining":
            assert state.drain_grace_s == self.model.grace_s
        if self.model.registered and self.model.offered is not None:
            offered = self.model.offered
            assert (state.donated, state.labels, list(state.allowed_images), state.hostd_version) == (
                offered.donated,
                {**offered.labels, "name": "laptop"},  # the name it was enrolled under, always
                offered.allowed_images,
                offered.hostd_version,
            )


HostMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_host_machine = HostMachine.TestCase
