"""Hollow hosts (labelled hollow=true) take only requests constrained to hollow=true.

Each scenario runs against the plain `place` over snapshots, a `Scheduler` built
from them, one brought there host by host (a host changing between hollow and
not on the way), and one that decides every labelled request by its label
indexes (`SMALL_CANDIDATES` 0). The properties: a request without the constraint
is decided exactly as if the hollow hosts were not in the pool (only a refusal's
message says they were set aside); a request with it exactly as if they were the
whole pool; and both implementations agree.
"""

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.allocator.scheduler import (
    EXCEEDS_ANY_HOST,
    HOLLOW_ASIDE,
    NO_FREE_CAPACITY,
    NO_HOST_ALLOWS_IMAGE,
    NO_HOST_MATCHES,
    NO_HOST_REGISTERED,
    STRATEGIES,
    ZERO,
    Decision,
    HostSnapshot,
    Impossible,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
    is_hollow,
    place,
    wants_hollow,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_labels import HOLLOW_LABEL
from tests.unit.test_scheduler import Decide, by_index, by_scan

GIB = 1 << 30
HOLLOW = dict([HOLLOW_LABEL])


def cap(cpus: float, memory: int = GIB, disk: int = 10 * GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def host(host_id: str, donated: Capacity, labels: dict[str, str] | None = None, **kw: object) -> HostSnapshot:
    return HostSnapshot(host_id, donated, labels=labels or {}, **kw)  # type: ignore[arg-type]


def hollow(
    host_id: str, donated: Capacity, labels: dict[str, str] | None = None, **kw: object
) -> HostSnapshot:
    return host(host_id, donated, {**(labels or {}), **HOLLOW}, **kw)


def req(
    cpus: float = 1, constraints: dict[str, str] | None = None, image: str | None = None
) -> PlacementRequest:
    return PlacementRequest("r", cap(cpus), constraints or {}, image)


def by_steps(hosts: Sequence[HostSnapshot], r: PlacementRequest, strategy: Strategy) -> Decision:
    """Each host first registered the other way round (hollow or not), empty, then as it is."""
    scheduler = Scheduler()
    for h in hosts:
        flipped = {k: v for k, v in h.labels.items() if k != HOLLOW_LABEL[0]}
        scheduler.set_host(replace(h, labels=flipped if is_hollow(h.labels) else {**flipped, **HOLLOW}))
    for h in reversed(hosts):
        scheduler.set_host(replace(h, reserved=ZERO))
        scheduler.reserve(h.host_id, h.reserved)
    return scheduler.place(r, strategy)


def by_label_indexes(hosts: Sequence[HostSnapshot], r: PlacementRequest, strategy: Strategy) -> Decision:
    scheduler = Scheduler(hosts)
    scheduler.SMALL_CANDIDATES = 0
    return scheduler.place(r, strategy)


@pytest.fixture(
    params=[by_scan, by_index, by_steps, by_label_indexes],
    ids=["place", "Scheduler", "Scheduler-steps", "Scheduler-label-indexes"],
)
def decide(request: pytest.FixtureRequest) -> Decide:
    fn: Decide = request.param
    return fn


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_request_without_the_constraint_never_goes_to_a_hollow_host(
    decide: Decide, strategy: Strategy
) -> None:
    """The hollow hosts are the tightest and the roomiest fit; the real one gets the work anyway."""
    hosts = [hollow("a-tight", cap(1)), host("m-real", cap(4)), hollow("z-roomy", cap(64, 64 * GIB))]
    assert decide(hosts, req(1), strategy) == Placed("m-real")
    assert decide(hosts, req(1, {"arch": "amd64"}), strategy) == Impossible(
        NO_HOST_MATCHES, "no host in the pool has the labels arch=amd64", "constraints"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_request_constrained_to_hollow_goes_only_to_hollow_hosts(
    decide: Decide, strategy: Strategy
) -> None:
    hosts = [host("a-real", cap(1)), hollow("m-hollow", cap(2)), host("z-real", cap(64, 64 * GIB))]
    assert decide(hosts, req(1, HOLLOW), strategy) == Placed("m-hollow")
    assert decide(hosts, req(1, {**HOLLOW, "name": "m"}), strategy) == Impossible(
        NO_HOST_MATCHES, "no host in the pool has the labels hollow=true, name=m", "constraints"
    )
    assert decide(hosts, req(4, HOLLOW), strategy) == Impossible(
        EXCEEDS_ANY_HOST,
        "no host matching the constraints donates 4 cpus; the most a host donates is 2 cpus",
        "cpus",
    )


def test_a_pool_of_hollow_hosts_refuses_an_ordinary_request_naming_them(decide: Decide) -> None:
    """Not "no host is registered": there are hosts, and the refusal says why none takes it."""
    hosts = [hollow("h0", cap(8)), hollow("h1", cap(8))]
    decision = decide(hosts, req(1), "best_fit")
    assert decision == Impossible(
        NO_HOST_MATCHES,
        "no host in the pool takes it: the pool has only hollow hosts, and "
        "hollow hosts take only requests constrained to hollow=true",
        "constraints",
    )
    assert decide(hosts, req(1, HOLLOW), "best_fit") == Placed("h0")


def test_labels_only_hollow_hosts_carry_are_refused_naming_them(decide: Decide) -> None:
    hosts = [hollow("h0", cap(8), {"arch": "arm64"}), host("r0", cap(8), {"arch": "amd64"})]
    assert decide(hosts, req(1, {"arch": "arm64"}), "best_fit") == Impossible(
        NO_HOST_MATCHES,
        "no host in the pool has the labels arch=arm64 but hollow hosts, and "
        "hollow hosts take only requests constrained to hollow=true",
        "constraints",
    )
    assert decide(hosts, req(1, {"arch": "amd64"}), "best_fit") == Placed("r0")
    assert decide(hosts, req(1, {"arch": "arm64", **HOLLOW}), "best_fit") == Placed("h0")


def test_a_full_real_host_makes_the_request_wait_not_go_hollow(decide: Decide) -> None:
    hosts = [host("r0", cap(2), reserved=cap(2)), hollow("h0", cap(8))]
    assert decide(hosts, req(1), "best_fit") == Wait(NO_FREE_CAPACITY)
    assert decide(hosts, req(1), "spread") == Wait(NO_FREE_CAPACITY)


def test_a_refusal_that_holds_only_without_the_hollow_hosts_says_so(decide: Decide) -> None:
    hosts = [host("r0", cap(2)), hollow("h0", cap(8)), hollow("h1", cap(8), allowed_images=("debian:*",))]
    assert decide(hosts, req(4), "best_fit") == Impossible(
        EXCEEDS_ANY_HOST,
        f"no host donates 4 cpus; the most a host donates is 2 cpus ({HOLLOW_ASIDE})",
        "cpus",
    )
    only = [replace(hosts[0], allowed_images=("alpine:*",)), hosts[2]]
    assert decide(only, req(1, image="debian:12"), "best_fit") == Impossible(
        NO_HOST_ALLOWS_IMAGE, f"no host allows the image 'debian:12' ({HOLLOW_ASIDE})", "image"
    )
    # With no hollow host matching its constraints, the refusal is the one it always was.
    assert decide(hosts, req(4, {"arch": "amd64"}), "best_fit") == Impossible(
        NO_HOST_MATCHES, "no host in the pool has the labels arch=amd64", "constraints"
    )


def test_a_pool_without_hollow_hosts_refuses_a_hollow_request(decide: Decide) -> None:
    assert decide([host("r0", cap(8))], req(1, HOLLOW), "best_fit") == Impossible(
        NO_HOST_MATCHES, "no host in the pool has the labels hollow=true", "constraints"
    )
    assert decide([], req(1, HOLLOW), "best_fit") == Wait(NO_HOST_REGISTERED)


def test_only_the_exact_label_makes_a_host_hollow() -> None:
    assert is_hollow({"hollow": "true"})
    assert not is_hollow({"hollow": "false"})
    assert not is_hollow({"hollow": "yes"})
    assert not is_hollow({})
    assert wants_hollow(req(1, {"hollow": "true", "arch": "amd64"}))
    assert not wants_hollow(req(1, {"hollow": "false"}))
    hosts = [host("r0", cap(8), {"hollow": "false"})]
    assert place(hosts, req(1)) == Scheduler(hosts).place(req(1)) == Placed("r0")


def test_the_scheduler_keeps_hollow_hosts_current_like_any_other() -> None:
    """Reservations, liveness and removal reach a hollow host; relabelling moves it."""
    scheduler = Scheduler([hollow("h0", cap(2)), host("r0", cap(2))])
    assert len(scheduler) == 2
    assert "h0" in scheduler
    assert "zz" not in scheduler
    scheduler.reserve("h0", cap(2))
    assert scheduler.snapshot("h0").reserved == cap(2)
    assert scheduler.place(req(1, HOLLOW)) == Wait(NO_FREE_CAPACITY)
    scheduler.release("h0", cap(1))
    assert scheduler.place(req(1, HOLLOW)) == Placed("h0")
    scheduler.set_reserved("h0", ZERO)
    scheduler.set_schedulable("h0", False)
    assert not scheduler.snapshot("h0").schedulable
    assert isinstance(scheduler.place(req(1, HOLLOW)), Wait)
    scheduler.set_schedulable("h0", True)
    scheduler.set_throttled("h0", True)
    assert scheduler.snapshot("h0").throttled
    assert scheduler.snapshots() == [
        hollow("h0", cap(2), throttled=True),
        host("r0", cap(2)),
    ]
    # The same host registers again without the label: it takes ordinary work now.
    scheduler.set_host(host("h0", cap(8)))
    assert scheduler.place(req(4)) == Placed("h0")
    assert isinstance(scheduler.place(req(1, HOLLOW)), Impossible)
    scheduler.set_host(hollow("r0", cap(2)))
    scheduler.remove_host("h0")
    assert isinstance(scheduler.place(req(1)), Impossible)
    scheduler.remove_host("r0")
    assert len(scheduler) == 0
    with pytest.raises(KeyError):
        scheduler.reserve("r0", cap(1))


# --- under hypothesis -----------------------------------------------------------------------------

#: cpus, share reserved, labels, hollow, schedulable, allowed images.
Drawn = tuple[float, float, dict[str, str], bool, bool, tuple[str, ...]]
pools = st.lists(
    st.builds(
        lambda c, used, labels, hollow_, schedulable, images: (c, used, labels, hollow_, schedulable, images),
        st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
        st.sampled_from([0.0, 0.5, 1.0]),
        st.sampled_from([{}, {"arch": "arm64"}, {"arch": "amd64"}]),
        st.booleans(),
        st.sampled_from([True, True, False]),
        st.sampled_from([(), ("debian:*",)]),
    ),
    max_size=24,
)
requests = st.builds(
    lambda c, constraints, image: PlacementRequest("r", cap(c), constraints, image),
    st.sampled_from([0.25, 1.0, 2.0, 3.0, 8.0, 9.0]),
    st.sampled_from([{}, {}, HOLLOW, {"arch": "arm64"}, {"arch": "amd64", **HOLLOW}, {"hollow": "false"}]),
    st.sampled_from([None, "debian:12", "alpine:3"]),
)


def pool_of(drawn: list[Drawn]) -> list[HostSnapshot]:
    hosts = []
    for i, (c, used, labels, hollow_, schedulable, images) in enumerate(drawn):
        make = hollow if hollow_ else host
        hosts.append(
            make(
                f"h{i:02d}",
                cap(c),
                labels,
                reserved=cap(round(c * used, 6)) if used else ZERO,
                schedulable=schedulable,
                allowed_images=images,
            )
        )
    return hosts


@settings(max_examples=300, deadline=None)
@given(drawn=pools, request=requests, strategy=st.sampled_from(STRATEGIES), small=st.sampled_from([0, 16]))
def test_hollow_hosts_count_only_for_requests_that_want_them(
    drawn: list[Drawn], request: PlacementRequest, strategy: Strategy, small: int
) -> None:
    hosts = pool_of(drawn)
    decision = place(hosts, request, strategy)
    scheduler = Scheduler(hosts)
    scheduler.SMALL_CANDIDATES = small
    assert scheduler.place(request, strategy) == decision
    if not hosts:
        assert decision == Wait(NO_HOST_REGISTERED)
        return
    by_id = {h.host_id: h for h in hosts}
    if isinstance(decision, Placed):
        assert is_hollow(by_id[decision.host_id].labels) == wants_hollow(request)
    hollow_hosts = [h for h in hosts if is_hollow(h.labels)]
    real_hosts = [h for h in hosts if not is_hollow(h.labels)]
    if wants_hollow(request):
        # Decided among the hollow hosts as if they were the whole pool, but for an empty one.
        if hollow_hosts:
            assert decision == place(hollow_hosts, request, strategy)
        else:
            assert isinstance(decision, Impossible), decision
            assert (decision.code, decision.field) == (NO_HOST_MATCHES, "constraints")
        return
    if not real_hosts:
        # Not a pool with no host, which waits for one: its hosts take only hollow requests.
        assert isinstance(decision, Impossible), decision
        assert (decision.code, decision.field) == (NO_HOST_MATCHES, "constraints")
        return
    # Decided as if the hollow hosts were not there; only what a refusal says may differ.
    alone = place(real_hosts, request, strategy)

    def matches(h: HostSnapshot) -> bool:
        return all(h.labels.get(k) == v for k, v in request.constraints.items())

    if not isinstance(decision, Impossible) or not any(matches(h) for h in hollow_hosts):
        assert decision == alone
        return
    assert isinstance(alone, Impossible)
    assert HOLLOW_ASIDE in decision.message
    if any(matches(h) for h in real_hosts):
        assert decision == replace(alone, message=f"{alone.message} ({HOLLOW_ASIDE})")
    else:
        # Not "no host is registered" nor "no host has the labels": hollow hosts have them.
        assert (decision.code, decision.field) == (NO_HOST_MATCHES, "constraints")
        assert "but hollow hosts" in decision.message or "only hollow hosts" in decision.message
