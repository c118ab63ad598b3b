"""Placement decisions, captured as a harness sees them (Nomad's scheduler tests).

Every scenario runs against each way of deciding: the plain `place` over
snapshots, a `Scheduler` built from them, and a `Scheduler` brought to the same
state step by step (hosts added empty and schedulable, then reserved and
switched), so the index is held to the rule it claims to implement.
"""

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.capacity import CapacityLedger, host_snapshots, snapshot_of
from potluck.allocator.scheduler import (
    EXCEEDS_ANY_HOST,
    NO_FREE_CAPACITY,
    NO_HOST_ALLOWS_IMAGE,
    NO_HOST_ALLOWS_NETWORK,
    NO_HOST_MATCHES,
    NO_HOST_REGISTERED,
    NO_SCHEDULABLE_HOST,
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
    place,
)
from potluck.contracts.allocation_events import CapacityReserved
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostDrainStarted,
    HostEnrolled,
    HostLost,
    HostPaused,
    HostRecovered,
    HostResumed,
    HostSuspected,
)
from potluck.contracts.image_reference import image_allowed
from potluck.events import Event
from potluck.readmodels.hosts import HostState, HostsView, evolve
from tests.helpers import host_registered

GIB = 1 << 30
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


def cap(cpus: float, memory: int, disk: int = 10 * GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def host_state(
    host_id: str, donated: Capacity, *then: Event, labels: dict[str, str] | None = None
) -> HostState:
    """A host as the registry's projection folds it: enrolled, registered, then `then`."""
    events: list[Event] = [
        HostEnrolled(host_id=host_id, name=host_id, nkey="U" + host_id),
        host_registered(
            host_id=host_id, donated=donated, labels=labels or {}, engine=ENGINE, hostd_version="test"
        ),
        *then,
    ]
    state: HostState | None = None
    for version, event in enumerate(events, start=1):
        state = evolve(state, event, version, T0)
    assert state is not None
    return state


def snap(
    host_id: str,
    donated: Capacity,
    *then: Event,
    reserved: Capacity = ZERO,
    labels: dict[str, str] | None = None,
) -> HostSnapshot:
    snapshot = snapshot_of(host_state(host_id, donated, *then, labels=labels), reserved)
    assert snapshot is not None
    return snapshot


def request(
    cpus: float,
    memory: int,
    disk: int = GIB,
    *,
    constraints: dict[str, str] | None = None,
    image: str | None = None,
    network: bool = False,
) -> PlacementRequest:
    return PlacementRequest(
        alloc_id=f"a-{cpus}-{memory}-{disk}",
        resources=cap(cpus, memory, disk),
        constraints=constraints or {},
        image=image,
        network=network,
    )


# --- three ways of deciding --------------------------------------------------------------------

Decide = Callable[[Sequence[HostSnapshot], PlacementRequest, Strategy], Decision]


def by_scan(hosts: Sequence[HostSnapshot], req: PlacementRequest, strategy: Strategy) -> Decision:
    return place(hosts, req, strategy)


def by_index(hosts: Sequence[HostSnapshot], req: PlacementRequest, strategy: Strategy) -> Decision:
    return Scheduler(hosts).place(req, strategy)


def by_steps(hosts: Sequence[HostSnapshot], req: PlacementRequest, strategy: Strategy) -> Decision:
    scheduler = Scheduler()
    for h in hosts:
        scheduler.set_host(replace(h, reserved=ZERO, schedulable=True))
    for h in reversed(hosts):
        if h.reserved != ZERO:
            scheduler.reserve(h.host_id, h.reserved)
        scheduler.set_schedulable(h.host_id, h.schedulable)
    return scheduler.place(req, strategy)


@pytest.fixture(params=[by_scan, by_index, by_steps], ids=["place", "Scheduler", "Scheduler-steps"])
def decide(request: pytest.FixtureRequest) -> Decide:
    fn: Decide = request.param
    return fn


@dataclass
class Harness:
    """Places requests one after another, reserving what it placed, and captures every decision."""

    decide: Decide
    hosts: dict[str, HostSnapshot]
    decisions: list[tuple[str, Decision]] = field(default_factory=list)

    def place(self, req: PlacementRequest, strategy: Strategy = "best_fit") -> Decision:
        decision = self.decide(list(self.hosts.values()), req, strategy)
        self.decisions.append((req.alloc_id, decision))
        if isinstance(decision, Placed):
            h = self.hosts[decision.host_id]
            self.hosts[h.host_id] = replace(h, reserved=h.reserved + req.resources)
        return decision

    def placed_on(self) -> list[str | None]:
        return [d.host_id if isinstance(d, Placed) else None for _, d in self.decisions]


def harness(decide: Decide, *hosts: HostSnapshot) -> Harness:
    return Harness(decide, {h.host_id: h for h in hosts})


# --- best fit and spread -------------------------------------------------------------------------


def test_best_fit_takes_the_host_left_tightest(decide: Decide) -> None:
    hosts = [snap("big", cap(8, 32 * GIB)), snap("small", cap(2, 4 * GIB))]
    assert decide(hosts, request(1, GIB), "best_fit") == Placed("small")


def test_spread_takes_the_host_with_most_free(decide: Decide) -> None:
    hosts = [snap("big", cap(8, 32 * GIB)), snap("small", cap(2, 4 * GIB))]
    assert decide(hosts, request(1, GIB), "spread") == Placed("big")


def test_best_fit_weighs_every_resource(decide: Decide) -> None:
    # Left over after 1 cpu, 1 GiB: cpu-heavy 3 cpus + 1 GiB (3.25 shares); memory-heavy 1 cpu + 7 GiB (2.75).
    hosts = [snap("cpu-heavy", cap(4, 2 * GIB)), snap("memory-heavy", cap(2, 8 * GIB))]
    assert decide(hosts, request(1, GIB), "best_fit") == Placed("memory-heavy")
    assert decide(hosts, request(1, GIB), "spread") == Placed("cpu-heavy")


def test_best_fit_counts_what_is_reserved(decide: Decide) -> None:
    hosts = [
        snap("a", cap(8, 16 * GIB), reserved=cap(6, 12 * GIB, GIB)),
        snap("b", cap(4, 8 * GIB)),
    ]
    assert decide(hosts, request(1, GIB), "best_fit") == Placed("a")
    assert decide(hosts, request(1, GIB), "spread") == Placed("b")


def test_best_fit_packs_one_host_while_spread_alternates(decide: Decide) -> None:
    packing = harness(decide, snap("a", cap(4, 8 * GIB)), snap("b", cap(4, 8 * GIB)))
    spreading = harness(decide, snap("a", cap(4, 8 * GIB)), snap("b", cap(4, 8 * GIB)))
    for i in range(5):
        packing.place(PlacementRequest(f"p{i}", cap(1, GIB, GIB)), "best_fit")
        spreading.place(PlacementRequest(f"s{i}", cap(1, GIB, GIB)), "spread")
    assert packing.placed_on() == ["a", "a", "a", "a", "b"]
    assert spreading.placed_on() == ["a", "b", "a", "b", "a"]


def test_a_full_pool_makes_the_next_request_wait(decide: Decide) -> None:
    h = harness(decide, snap("a", cap(2, 4 * GIB)), snap("b", cap(1, 2 * GIB)))
    for i in range(3):
        h.place(PlacementRequest(f"r{i}", cap(1, 2 * GIB, GIB)))
    h.place(PlacementRequest("r3", cap(1, 2 * GIB, GIB)))
    assert h.placed_on() == ["b", "a", "a", None]
    assert h.decisions[-1] == ("r3", Wait(NO_FREE_CAPACITY))


@pytest.mark.parametrize("strategy", ["best_fit", "spread"])
def test_ties_go_to_the_smallest_host_id_whatever_the_order(decide: Decide, strategy: Strategy) -> None:
    hosts = [snap(name, cap(4, 8 * GIB)) for name in ("h2", "h10", "h1", "h3")]
    for order in itertools.permutations(hosts):
        assert decide(list(order), request(1, GIB), strategy) == Placed("h1")


@pytest.mark.parametrize("strategy", ["best_fit", "spread"])
def test_the_same_inputs_give_the_same_decision(decide: Decide, strategy: Strategy) -> None:
    rnd = random.Random(7)
    hosts = [
        snap(f"h{i}", cap(rnd.choice([2, 4, 8]), rnd.choice([4, 8, 16]) * GIB), reserved=cap(1, GIB))
        for i in range(60)
    ]
    req = request(2, 3 * GIB)
    first = decide(hosts, req, strategy)
    for _ in range(5):
        rnd.shuffle(hosts)
        assert decide(hosts, req, strategy) == first


def test_an_unknown_strategy_is_refused(decide: Decide) -> None:
    with pytest.raises(ValueError, match="unknown placement strategy"):
        decide([snap("a", cap(1, GIB))], request(1, GIB), "worst_fit")  # type: ignore[arg-type]


# --- constraints and images ----------------------------------------------------------------------


def test_constraints_choose_among_matching_hosts_only(decide: Decide) -> None:
    hosts = [
        snap("tight-amd", cap(1, 2 * GIB), labels={"arch": "amd64"}),
        snap("roomy-arm", cap(8, 32 * GIB), labels={"arch": "arm64", "gpu": "no"}),
    ]
    assert decide(hosts, request(1, GIB, constraints={"arch": "arm64"}), "best_fit") == Placed("roomy-arm")
    both = {"arch": "arm64", "gpu": "no"}
    assert decide(hosts, request(1, GIB, constraints=both), "best_fit") == Placed("roomy-arm")


@pytest.mark.parametrize(
    "constraints", [{"arch": "riscv"}, {"zone": "moon"}, {"arch": "arm64", "gpu": "yes"}]
)
def test_constraints_no_host_has_are_impossible(decide: Decide, constraints: dict[str, str]) -> None:
    hosts = [
        snap("a", cap(8, 32 * GIB), labels={"arch": "amd64"}),
        snap("b", cap(8, 32 * GIB), HostPaused(host_id="b", by="member"), labels={"arch": "arm64"}),
    ]
    decision = decide(hosts, request(1, GIB, constraints=constraints), "best_fit")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (NO_HOST_MATCHES, "constraints")


def test_a_match_only_on_an_unschedulable_host_waits(decide: Decide) -> None:
    hosts = [
        snap("a", cap(8, 32 * GIB), labels={"arch": "amd64"}),
        snap("b", cap(8, 32 * GIB), HostPaused(host_id="b", by="member"), labels={"arch": "arm64"}),
    ]
    assert decide(hosts, request(1, GIB, constraints={"arch": "arm64"}), "best_fit") == Wait(
        NO_SCHEDULABLE_HOST
    )


def test_a_refusal_for_size_names_the_most_a_host_donates_with_what_was_asked_before_it(
    decide: Decide,
) -> None:
    """Tried: requests past every host's cpus, past the memory of every host with the cpus asked,
    past the disk of every host with both. A data user read "no host donates 1 cpu with 3G of
    memory" with no hint of what to ask. Must hold: each names the most a host donates of that
    resource among the hosts that give what was asked before it (the same in both
    implementations: `decide` runs both)."""
    hosts = [snap("small", cap(1, 2 * GIB, 10 * GIB)), snap("big", cap(4, 8 * GIB, 20 * GIB))]
    cpus = decide(hosts, request(64, GIB), "best_fit")
    assert isinstance(cpus, Impossible)
    assert cpus.message == "no host donates 64 cpus; the most a host donates is 4 cpus"
    memory = decide(hosts, request(2, 12 * GIB), "best_fit")
    assert isinstance(memory, Impossible)
    assert (
        memory.message
        == "no host donates 2 cpus with 12G of memory; the most memory a host with 2 cpus donates is 8G"
    )
    disk = decide(hosts, request(1, 4 * GIB, 64 * GIB), "best_fit")
    assert isinstance(disk, Impossible)
    assert disk.field == "disk"
    assert disk.message.endswith("; the most disk a host with 1 cpu and 4G of memory donates is 20G")


def test_a_match_only_on_hosts_too_small_is_impossible(decide: Decide) -> None:
    hosts = [
        snap("a", cap(2, 4 * GIB), labels={"arch": "arm64"}),
        snap("b", cap(16, 64 * GIB), labels={"arch": "amd64"}),
    ]
    decision = decide(hosts, request(4, GIB, constraints={"arch": "arm64"}), "best_fit")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (EXCEEDS_ANY_HOST, "cpus")
    assert (
        decision.message
        == "no host matching the constraints donates 4 cpus; the most a host donates is 2 cpus"
    )


def test_hosts_that_restrict_images_get_only_those(decide: Decide) -> None:
    debian_only = replace(snap("tight", cap(1, 2 * GIB)), allowed_images=("debian:*",))
    anything = snap("roomy", cap(8, 32 * GIB))
    assert decide([debian_only, anything], request(1, GIB, image="debian:12"), "best_fit") == Placed("tight")
    assert decide([debian_only, anything], request(1, GIB, image="alpine:3"), "best_fit") == Placed("roomy")
    assert decide([debian_only, anything], request(1, GIB), "best_fit") == Placed("tight")
    decision = decide([debian_only], request(1, GIB, image="alpine:3"), "best_fit")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (NO_HOST_ALLOWS_IMAGE, "image")


@pytest.mark.parametrize(
    "image",
    ["debian:5000/evil/img:1", "debian/evil:1", "evil.example/debian:12", "debian@sha256:" + "a" * 64],
)
def test_an_image_pattern_admits_no_other_registry_or_repository(decide: Decide, image: str) -> None:
    """`debian:*` is every tag of Docker Hub's debian: its `*` spans no ':', '/' or '@', so an
    image from registry `debian:5000`, another repository, or pinned by digest alone is refused."""
    debian_only = replace(snap("tight", cap(1, 2 * GIB)), allowed_images=("debian:*",))

    decision = decide([debian_only], request(1, GIB, image=image), "best_fit")

    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (NO_HOST_ALLOWS_IMAGE, "image")
    assert decide([debian_only], request(1, GIB, image="docker.io/library/debian:12"), "best_fit") == Placed(
        "tight"
    )


def test_an_image_from_a_members_own_network_goes_only_where_its_member_named_the_registry(
    decide: Decide,
) -> None:
    """An image whose registry is a loopback address (not the pool's): a host that allows any
    image, and one whose pattern reaches it only through a wildcard registry, would refuse
    the pull (hostd's local_registries), so only the host naming `127.0.0.1:5000` takes it;
    with none, it is impossible, naming the registry and the way out."""
    image = "127.0.0.1:5000/team/tool:1"
    local = replace(request(1, GIB, image=image), local_registry="127.0.0.1:5000")
    anything = snap("anything", cap(8, 32 * GIB))
    wildcard = replace(snap("wildcard", cap(8, 32 * GIB)), allowed_images=("*/team/*:*",))
    named = replace(snap("named", cap(1, 2 * GIB)), allowed_images=("127.0.0.1:5000/team/*:*",))

    assert decide([anything, wildcard, named], local, "spread") == Placed("named")
    decision = decide([anything, wildcard], local, "spread")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (NO_HOST_ALLOWS_IMAGE, "image")
    assert "no host names the registry 127.0.0.1:5000 in its allowed_images" in decision.message
    assert "potluck image push" in decision.message
    # Named, but full: the request waits for that host rather than going anywhere else.
    busy = replace(named, reserved=cap(1, 2 * GIB))
    assert decide([anything, busy], local, "best_fit") == Wait(NO_FREE_CAPACITY)


def test_a_request_for_a_network_goes_only_where_the_member_allows_one(decide: Decide) -> None:
    """Hosts allow no network unless their member said so: a networked request skips the
    roomier host that does not, waits when the one that does is full, and is impossible
    where no host does; requests without a network go anywhere."""
    closed = snap("closed", cap(8, 32 * GIB))
    open_ = replace(snap("open", cap(2, 4 * GIB)), allow_network=True)
    assert not closed.allow_network

    assert decide([closed, open_], request(4, GIB, network=True), "spread") == Impossible(
        EXCEEDS_ANY_HOST,
        "no host that allows a network donates 4 cpus; the most a host donates is 2 cpus",
        "cpus",
    )
    assert decide([closed, open_], request(1, GIB, network=True), "spread") == Placed("open")
    assert decide([closed, open_], request(1, GIB), "spread") == Placed("closed")
    full = replace(open_, reserved=cap(2, 4 * GIB))
    assert decide([closed, full], request(1, GIB, network=True), "best_fit") == Wait(NO_FREE_CAPACITY)
    decision = decide([closed], request(1, GIB, network=True), "best_fit")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (NO_HOST_ALLOWS_NETWORK, "network")
    debian_open = replace(open_, allowed_images=("debian:*",))
    decision = decide([closed, debian_open], request(1, GIB, image="alpine:3", network=True), "best_fit")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (NO_HOST_ALLOWS_NETWORK, "network")
    # Names which hosts were looked at, and what would let the request through (a data user
    # got only the first half, and no way on).
    assert decision.message.startswith(
        "no host that allows the image 'alpine:3' lets containers have a network:"
    )
    assert "`allow_network = true` in their hostd.toml" in decision.message
    assert "potluck cp" in decision.message


def test_a_hosts_allow_network_comes_from_its_registration() -> None:
    """The member's `allow_network` travels in HostRegistered to the scheduler's snapshot."""
    state = evolve(
        host_state("h", cap(1, GIB)),
        host_registered(
            host_id="h", donated=cap(1, GIB), allow_network=True, engine=ENGINE, hostd_version="t"
        ),
        9,
        T0,
    )
    assert state is not None
    snapshot = snapshot_of(state)
    assert snapshot is not None
    assert snapshot.allow_network


# --- hosts that may not take work --------------------------------------------------------------

UNSCHEDULABLE: dict[str, Callable[[str], Event]] = {
    "unreachable": lambda h: HostSuspected(host_id=h, silent_for_s=30),
    "lost": lambda h: HostLost(host_id=h, silent_for_s=300),
    "paused": lambda h: HostPaused(host_id=h, by="member"),
    "draining": lambda h: HostDrainStarted(host_id=h, by="member", grace_s=60),
}


@pytest.mark.parametrize("status", sorted(UNSCHEDULABLE))
def test_an_unschedulable_host_is_skipped(decide: Decide, status: str) -> None:
    tight = snap("tight", cap(1, 2 * GIB), UNSCHEDULABLE[status]("tight"))
    roomy = snap("roomy", cap(8, 32 * GIB))
    state = host_state("tight", cap(1, 2 * GIB), UNSCHEDULABLE[status]("tight"))
    assert state.status == status
    assert not state.schedulable
    assert not tight.schedulable
    assert decide([tight, roomy], request(1, GIB), "best_fit") == Placed("roomy")
    assert decide([tight, roomy], request(1, GIB), "spread") == Placed("roomy")
    # Only it could hold the request: wait for it to come back rather than refuse.
    assert decide([tight], request(1, GIB), "best_fit") == Wait(NO_SCHEDULABLE_HOST)


@pytest.mark.parametrize(
    ("status", "back"),
    [
        ("unreachable", HostRecovered(host_id="h", was="unreachable")),
        ("lost", HostRecovered(host_id="h", was="lost")),
        ("paused", HostResumed(host_id="h", by="member")),
    ],
)
def test_a_host_that_comes_back_takes_work_again(decide: Decide, status: str, back: Event) -> None:
    host = snap("h", cap(2, 4 * GIB), UNSCHEDULABLE[status]("h"), back)
    assert host.schedulable
    assert decide([host], request(1, GIB), "best_fit") == Placed("h")


def test_a_deregistered_host_counts_for_nothing(decide: Decide) -> None:
    gone = host_state("gone", cap(16, 64 * GIB), HostDeregistered(host_id="gone", by="member"))
    assert gone.status == "deregistered"
    assert not gone.schedulable
    assert snapshot_of(gone) is None
    small = snap("small", cap(2, 4 * GIB))
    view = HostsView(hosts={"gone": gone, "small": host_state("small", cap(2, 4 * GIB))})
    assert [h.host_id for h in host_snapshots(view, CapacityLedger())] == ["small"]
    decision = decide([small], request(8, GIB), "best_fit")
    assert isinstance(decision, Impossible)
    assert decision.field == "cpus"
    # Handed in anyway (schedulable False, as its state says), it is skipped like any other.
    raw = HostSnapshot("gone", cap(16, 64 * GIB), ZERO, {}, gone.schedulable)
    assert decide([raw, small], request(8, GIB), "best_fit") == Wait(NO_SCHEDULABLE_HOST)
    assert decide([raw, small], request(1, GIB), "best_fit") == Placed("small")


def test_reregistering_after_deregistration_makes_a_host_schedulable() -> None:
    state = host_state(
        "h",
        cap(2, 4 * GIB),
        HostDeregistered(host_id="h", by="member"),
        host_registered(host_id="h", donated=cap(4, 8 * GIB), engine=ENGINE, hostd_version="test"),
    )
    snapshot = snapshot_of(state)
    assert snapshot is not None
    assert snapshot.schedulable
    assert snapshot.donated == cap(4, 8 * GIB)


# --- waiting versus impossible -------------------------------------------------------------------


def test_exactly_the_donation_fits_an_empty_host(decide: Decide) -> None:
    assert decide([snap("h", cap(4, 8 * GIB, 100 * GIB))], request(4, 8 * GIB, 100 * GIB), "best_fit") == (
        Placed("h")
    )


def test_exactly_the_donation_waits_while_anything_is_reserved(decide: Decide) -> None:
    host = snap("h", cap(4, 8 * GIB, 100 * GIB), reserved=cap(0.5, 1, 1))
    assert decide([host], request(4, 8 * GIB, 100 * GIB), "best_fit") == Wait(NO_FREE_CAPACITY)


def test_exactly_what_is_free_fits_and_one_byte_more_waits(decide: Decide) -> None:
    host = snap("h", cap(4, 8 * GIB, 100 * GIB), reserved=cap(1, 3 * GIB, 40 * GIB))
    assert decide([host], request(3, 5 * GIB, 60 * GIB), "best_fit") == Placed("h")
    assert decide([host], request(3, 5 * GIB + 1, 60 * GIB), "best_fit") == Wait(NO_FREE_CAPACITY)
    assert decide([host], request(3, 5 * GIB, 60 * GIB + 1), "best_fit") == Wait(NO_FREE_CAPACITY)
    assert decide([host], request(3.000001, 5 * GIB, 60 * GIB), "best_fit") == Wait(NO_FREE_CAPACITY)


def test_free_cpus_after_many_small_reservations_are_exact(decide: Decide) -> None:
    ledger = CapacityLedger()
    for i in range(7):
        ledger.apply(CapacityReserved(host_id="h", alloc_id=f"a{i}", amount=cap(0.1, 1, 1)), version=i + 1)
    host = snap("h", cap(1, GIB), reserved=ledger.reserved("h"))
    assert decide([host], request(0.3, 1), "best_fit") == Placed("h")
    assert decide([host], request(0.300001, 1), "best_fit") == Wait(NO_FREE_CAPACITY)


@pytest.mark.parametrize(
    ("wanted", "field"),
    [
        (cap(4.000001, 8 * GIB, 100 * GIB), "cpus"),
        (cap(4, 8 * GIB + 1, 100 * GIB), "memory"),
        (cap(4, 8 * GIB, 100 * GIB + 1), "disk"),
    ],
)
def test_one_unit_over_the_largest_donation_is_impossible(
    decide: Decide, wanted: Capacity, field: str
) -> None:
    # Judged on donations, whatever each host's state: the big one is lost, yet it counts.
    hosts = [
        snap("big", cap(4, 8 * GIB, 100 * GIB), HostLost(host_id="big", silent_for_s=600)),
        snap("small", cap(1, GIB, 10 * GIB)),
    ]
    decision = decide(hosts, PlacementRequest("x", wanted), "best_fit")
    assert isinstance(decision, Impossible)
    assert (decision.code, decision.field) == (EXCEEDS_ANY_HOST, field)
    assert decision.message.startswith("no host donates 4 cpus")


def test_the_first_resource_no_host_gives_with_the_ones_before_is_named(decide: Decide) -> None:
    hosts = [snap("cpus", cap(8, 2 * GIB)), snap("memory", cap(1, 16 * GIB))]
    both = decide(hosts, request(4, 8 * GIB), "best_fit")
    assert isinstance(both, Impossible)
    assert both.field == "memory"
    too_many_cpus = decide(hosts, request(9, GIB), "best_fit")
    assert isinstance(too_many_cpus, Impossible)
    assert too_many_cpus.field == "cpus"
    too_much_disk = decide(hosts, request(1, GIB, 1 << 40), "best_fit")
    assert isinstance(too_much_disk, Impossible)
    assert too_much_disk.field == "disk"


def test_an_empty_pool_refuses_nothing_and_waits_for_a_host(decide: Decide) -> None:
    """A pool with no host at all is between members (a restored log's `potluck up` revokes the
    old host before its new one joins; the only member leaves): before, every request, and every
    queued one on its next look, was refused for good as exceeding any host. It waits instead,
    labels and all, for at most its queue timeout."""
    assert decide([], request(1, GIB), "best_fit") == Wait(NO_HOST_REGISTERED)
    assert decide([], request(1, GIB, constraints={"gpu": "yes"}), "spread") == Wait(NO_HOST_REGISTERED)
    assert "waits for one to join" in Wait(NO_HOST_REGISTERED).message


def test_wait_reasons_have_messages() -> None:
    assert "capacity frees" in Wait(NO_FREE_CAPACITY).message
    assert "paused" in Wait(NO_SCHEDULABLE_HOST).message


# --- the index itself ----------------------------------------------------------------------------


def test_scheduler_snapshots_round_trip() -> None:
    hosts = [
        snap("a", cap(4, 8 * GIB), reserved=cap(1, GIB), labels={"arch": "arm64"}),
        snap("b", cap(2, 4 * GIB), HostPaused(host_id="b", by="member")),
    ]
    scheduler = Scheduler(hosts)
    assert scheduler.snapshots() == hosts
    assert len(scheduler) == 2
    assert "a" in scheduler
    assert "z" not in scheduler
    scheduler.reserve("a", cap(1, GIB))
    scheduler.release("a", cap(1, GIB))
    assert scheduler.snapshot("a") == hosts[0]
    scheduler.set_reserved("a", cap(4, 8 * GIB))
    assert scheduler.place(request(1, GIB)) == Wait(NO_FREE_CAPACITY)
    scheduler.remove_host("a")
    scheduler.remove_host("a")
    assert scheduler.snapshots() == hosts[1:]
    assert scheduler.place(request(1, GIB)) == Wait(NO_SCHEDULABLE_HOST)


@pytest.mark.parametrize("seed", range(2))
def test_scheduler_agrees_with_place_over_a_large_changing_pool(seed: int) -> None:
    rnd = random.Random(seed)
    shapes = [cap(c, m * GIB, d * GIB) for c in (1, 2, 4, 8, 16) for m in (2, 8, 32) for d in (50, 500)]
    labels = [{}, {"arch": "arm64"}, {"arch": "amd64"}, {"arch": "amd64", "gpu": "yes"}]
    scheduler = Scheduler()
    for i in range(400):
        scheduler.set_host(
            HostSnapshot(
                f"h{i:04d}",
                rnd.choice(shapes),
                labels=rnd.choice(labels),
                schedulable=rnd.random() > 0.1,
                allowed_images=rnd.choice([(), (), ("debian:*",)]),
                allow_network=rnd.random() < 0.2,
            )
        )
    live: list[tuple[str, Capacity]] = []
    for n in range(300):
        req = PlacementRequest(
            f"r{n}",
            cap(rnd.choice([0.25, 0.5, 1, 2, 4, 12]), rnd.choice([1, 2, 6, 24]) * GIB // 2),
            constraints=rnd.choice([{}, {}, {"arch": "amd64"}, {"gpu": "yes"}, {"arch": "ppc"}]),
            image=rnd.choice([None, "debian:12", "alpine:3"]),
            network=rnd.random() < 0.3,
        )
        strategy: Strategy = rnd.choice(["best_fit", "spread"])
        decision = scheduler.place(req, strategy)
        assert decision == place(scheduler.snapshots(), req, strategy), (n, req)
        if isinstance(decision, Placed):
            scheduler.reserve(decision.host_id, req.resources)
            live.append((decision.host_id, req.resources))
        if live and rnd.random() < 0.3:
            host_id, amount = live.pop(rnd.randrange(len(live)))
            scheduler.release(host_id, amount)
        if rnd.random() < 0.05:
            host_id = f"h{rnd.randrange(400):04d}"
            scheduler.set_schedulable(host_id, not scheduler.snapshot(host_id).schedulable)


@st.composite
def _network_pools(draw: st.DrawFn) -> tuple[list[HostSnapshot], PlacementRequest]:
    hosts = [
        HostSnapshot(
            f"h{i}",
            cap(draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 4])) * GIB),
            reserved=draw(st.sampled_from([ZERO, cap(1, GIB)])),
            schedulable=draw(st.booleans()),
            allowed_images=draw(st.sampled_from([(), ("debian:*",), ("registry.example.org/acme/*:*",)])),
            allow_network=draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 6)))
    ]
    req = PlacementRequest(
        "r",
        cap(draw(st.sampled_from([0.5, 1, 3])), GIB),
        image=draw(
            st.sampled_from(
                [None, "debian:12", "registry.example.org/acme/tool:1", "debian:5000/acme/tool:1"]
            )
        ),
        network=draw(st.booleans()),
    )
    return hosts, req


@given(_network_pools(), st.sampled_from(STRATEGIES))
def test_a_networked_request_never_lands_where_the_member_said_no(
    case: tuple[list[HostSnapshot], PlacementRequest], strategy: Strategy
) -> None:
    """Any pool, any request: both implementations decide alike; a placement is on a host that
    admits the image and, if asked, a network; NO_HOST_ALLOWS_NETWORK only when no host that
    admits the image allows a network."""
    hosts, req = case
    decision = place(hosts, req, strategy)
    assert Scheduler(hosts).place(req, strategy) == decision
    by_id = {h.host_id: h for h in hosts}
    admits_image = [h for h in hosts if req.image is None or image_allowed(h.allowed_images, req.image)]
    if isinstance(decision, Placed):
        host = by_id[decision.host_id]
        assert host in admits_image
        assert host.allow_network or not req.network
    if isinstance(decision, Impossible) and decision.code == NO_HOST_ALLOWS_NETWORK:
        assert req.network
        assert admits_image
        assert not any(h.allow_network for h in admits_image)
