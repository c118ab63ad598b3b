"""Which hosts' events consumers the registry removes: only those of hosts the log says are out."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.subjects import HOST_ID_ALPHABET, host_consumer
from potluck.readmodels.hosts import HostState
from potluck.registry.gone_consumers import OUT_EVENT, Candidate, candidates, host_of_consumer, to_remove

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: When the consumers were made: before their hosts' last event.
BEFORE = T0 - timedelta(hours=1)
ADMIN = st.sampled_from(["active", "paused", "draining", "deregistered", "left", "revoked"])
LIVENESS = st.sampled_from([None, "online", "asleep", "unreachable", "lost"])
HOST_ID = st.text(alphabet=sorted(HOST_ID_ALPHABET), min_size=1, max_size=12)


def host(host_id: str, admin: str = "active", liveness: str | None = "online") -> HostState:
    state = HostState(host_id=host_id, name=host_id, nkey="U", registered=True, changed_at=T0)
    return replace(state, admin=admin, liveness=liveness)  # type: ignore[arg-type]


def test_the_consumers_of_hosts_that_left_were_revoked_or_deregistered_are_candidates() -> None:
    hosts = {h: host(h, admin) for h, admin in [("a", "left"), ("b", "revoked"), ("c", "deregistered")]}
    found = candidates(hosts, {host_consumer(h): BEFORE for h in "abc"})
    assert [(c.host_id, c.out_event) for c in found] == [
        ("a", "HostLeft"),
        ("b", "HostRevoked"),
        ("c", "HostDeregistered"),
    ]


def test_members_keep_theirs_however_they_are_and_unknown_names_are_left_alone() -> None:
    hosts = {
        "asleep": host("asleep", liveness="asleep"),
        "unreachable": host("unreachable", liveness="unreachable"),
        "lost": host("lost", liveness="lost"),
        "paused": host("paused", "paused"),
        "draining": host("draining", "draining"),
        "gone": host("gone", "left"),
    }
    names = [host_consumer(h) for h in hosts] + ["allocator", "hostd-", "hostd-unknown", "hostd-GONE"]
    assert [c.consumer for c in candidates(hosts, dict.fromkeys(names, BEFORE))] == [host_consumer("gone")]


def test_a_consumer_made_after_its_host_went_out_is_its_return_and_kept() -> None:
    """A deregistered host registered again: the registry made its consumer anew, and the view,
    a moment behind the log, still says deregistered."""
    hosts = {"back": host("back", "deregistered")}
    assert candidates(hosts, {host_consumer("back"): T0 + timedelta(seconds=1)}) == []
    assert len(candidates(hosts, {host_consumer("back"): T0})) == 1
    assert len(candidates(hosts, {host_consumer("back"): None})) == 1


def test_a_candidate_goes_once_hostd_acknowledged_or_after_the_grace() -> None:
    c = Candidate("hostd-a", "a", "HostLeft", T0)
    assert to_remove([c], {"hostd-a": True}, T0, 60.0) == [c]
    assert to_remove([c], {"hostd-a": False}, T0 + timedelta(seconds=59), 60.0) == []
    assert to_remove([c], {}, T0 + timedelta(seconds=60), 60.0) == [c]


@given(host_id=HOST_ID)
def test_a_host_consumer_name_gives_its_host_back(host_id: str) -> None:
    assert host_of_consumer(host_consumer(host_id)) == host_id


@given(
    hosts=st.dictionaries(HOST_ID, st.tuples(ADMIN, LIVENESS), max_size=8),
    extra=st.lists(st.text(max_size=10), max_size=4),
    acked=st.booleans(),
    elapsed=st.floats(min_value=0, max_value=1000),
)
def test_only_consumers_of_out_hosts_are_ever_removed(
    hosts: dict[str, tuple[str, str | None]], extra: list[str], acked: bool, elapsed: float
) -> None:
    states = {h: host(h, admin, liveness) for h, (admin, liveness) in hosts.items()}
    names = [host_consumer(h) for h in hosts] + extra
    found = candidates(states, dict.fromkeys(names, BEFORE))
    removed = to_remove(found, {c.consumer: acked for c in found}, T0 + timedelta(seconds=elapsed), 60.0)
    out = {host_consumer(h) for h, s in states.items() if s.admin in OUT_EVENT}
    assert {c.consumer for c in found} == out
    assert {c.consumer for c in removed} <= out
    assert {c.consumer for c in removed} == (out if acked or elapsed >= 60.0 else set())
