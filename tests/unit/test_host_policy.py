"""The Host aggregate's owner-policy block (services/registry/host.py policy_changed).

States are folded with the registry's own fold; each test checks what a PolicyChanged from
hostd records: a change is one event, the same state again is none, a host that is not
registered is refused.
"""

from datetime import UTC, datetime

import pytest

from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostEnrolled,
    HostFrozen,
    HostShareRestored,
    HostThrottled,
)
from potluck.contracts.messages import PolicyChanged
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, evolve
from potluck.registry import host
from tests.helpers import host_registered

H = "h-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


def fold(*events: Event) -> HostState | None:
    state: HostState | None = None
    for version, event in enumerate(events, start=1):
        state = evolve(state, event, version, T0)
    return state


ENROLLED = HostEnrolled(host_id=H, name="laptop", nkey="UKEY")
REGISTERED = host_registered(
    host_id=H,
    donated=Capacity(cpus=2, memory_bytes=1 << 30, disk_bytes=1 << 30),
    engine=ENGINE,
    hostd_version="1",
)
THROTTLED = PolicyChanged(state="throttled", cause="owner", reason="the owner uses 1.3 CPUs", share_cpus=0.5)


def test_a_throttle_is_recorded_once_with_cause_reason_and_share() -> None:
    """normal -> throttled: HostThrottled with what hostd said; the same again: nothing."""
    events = host.policy_changed(fold(ENROLLED, REGISTERED), H, THROTTLED)

    assert events == [
        HostThrottled(host_id=H, cause="owner", reason="the owner uses 1.3 CPUs", share_cpus=0.5)
    ]
    assert host.policy_changed(fold(ENROLLED, REGISTERED, *events), H, THROTTLED) == []


def test_a_freeze_carries_max_frozen_s_and_a_new_cause_is_a_new_event() -> None:
    """throttled by the owner -> frozen by the battery: HostFrozen with max_frozen_s; then
    throttled by heat after owner: a new HostThrottled."""
    state = fold(ENROLLED, REGISTERED, HostThrottled(host_id=H, cause="owner", reason="r", share_cpus=0.5))
    frozen = PolicyChanged(state="frozen", cause="battery", reason="on battery", max_frozen_s=600)

    assert host.policy_changed(state, H, frozen) == [
        HostFrozen(host_id=H, cause="battery", reason="on battery", max_frozen_s=600)
    ]
    heat = PolicyChanged(state="throttled", cause="heat", reason="hot", share_cpus=0.5)
    assert [type(e) for e in host.policy_changed(state, H, heat)] == [HostThrottled]


def test_back_to_normal_restores_the_share_once() -> None:
    """throttled -> normal: HostShareRestored; normal -> normal (hostd re-sends after every
    registration): nothing."""
    state = fold(ENROLLED, REGISTERED, HostThrottled(host_id=H, cause="owner", reason="r", share_cpus=0.5))
    normal = PolicyChanged(state="normal")

    assert host.policy_changed(state, H, normal) == [HostShareRestored(host_id=H)]
    assert host.policy_changed(fold(ENROLLED, REGISTERED), H, normal) == []


def test_a_host_not_registered_or_a_cause_missing_is_refused() -> None:
    """Enrolled only: NOT_REGISTERED. Throttled without a cause: BAD_REQUEST naming cause."""
    with pytest.raises(Rejected) as unregistered:
        host.policy_changed(fold(ENROLLED), H, THROTTLED)
    with pytest.raises(Rejected) as causeless:
        host.policy_changed(fold(ENROLLED, REGISTERED), H, PolicyChanged(state="throttled", share_cpus=1))

    assert unregistered.value.code == "NOT_REGISTERED"
    assert causeless.value.code == "BAD_REQUEST"
    assert causeless.value.field == "cause"
