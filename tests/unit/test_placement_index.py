"""The allocator's placement index (services/allocator/placement_index.py) against the plain rule.

The allocator now decides on a Scheduler it keeps in step with its model host by
host, where it used to build every host's snapshot anew for each decision. Under
hypothesis, hosts register, change state, report images and leave; requests are
decided, queued in flight, land in the log (folded by the model) or fail; capacity
is freed. After every step, for requests of every kind (labels, images a member
refuses, a network, hosts to avoid), `Outlook.place` must decide exactly as
`place(host_snapshots(...))` over the same model and requests in flight does, and
the index must hold exactly those snapshots. The label indexes and the image
holders' search are forced on (`SMALL_CANDIDATES` 0) so that the small pools here
take the paths a large pool takes.
"""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule

from potluck.allocator.capacity import host_snapshots, placement_request
from potluck.allocator.decisions import Outlook, placement
from potluck.allocator.in_flight import InFlight, InFlightRequests
from potluck.allocator.model import AllocatorModel
from potluck.allocator.scheduler import (
    STRATEGIES,
    Decision,
    HostSnapshot,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    is_hollow,
    place,
    wants_hollow,
)
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationSpec,
    CapacityFreed,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import (
    HostDeregistered,
    HostEngineLost,
    HostEngineReturned,
    HostEnrolled,
    HostFrozen,
    HostPaused,
    HostRecovered,
    HostResumed,
    HostShareRestored,
    HostSuspected,
    HostThrottled,
    host_stream,
)
from potluck.contracts.host_images import HostImagesReported, images_stream
from potluck.events import Event, Fold, StreamAppend, WrongExpectedVersion
from tests.helpers import host_registered
from tests.unit.test_allocator_model import ENGINE, GIB, T0, RecordingLog

IMAGES = ("debian:12", "python:3.12", "potluck-test:1")
HELD = {image: f"docker.io/library/{image}" for image in IMAGES}
PROBES = [
    PlacementRequest("p1", Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB)),
    PlacementRequest("p2", Capacity(cpus=2, memory_bytes=2 * GIB, disk_bytes=GIB), image="python:3.12"),
    PlacementRequest(
        "p3", Capacity(cpus=0.5, memory_bytes=GIB, disk_bytes=GIB), {"arch": "arm64"}, "debian:12"
    ),
    PlacementRequest("p4", Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB), {"gpu": "yes"}, network=True),
    PlacementRequest(
        "p5", Capacity(cpus=4, memory_bytes=8 * GIB, disk_bytes=GIB), {"arch": "amd64", "gpu": "yes"}
    ),
    PlacementRequest(
        "p6",
        Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB),
        image="debian:12",
        excluded_hosts=frozenset({"h1"}),
    ),
    PlacementRequest("p7", Capacity(cpus=64, memory_bytes=GIB, disk_bytes=GIB)),
]

donations = st.builds(
    lambda c, m: Capacity(cpus=c, memory_bytes=m * GIB, disk_bytes=100 * GIB),
    st.sampled_from([1.0, 2.0, 4.0, 8.0]),
    st.integers(1, 16),
)
label_sets = st.sampled_from(
    [{}, {"arch": "arm64"}, {"arch": "amd64"}, {"arch": "amd64", "gpu": "yes"}, {"hollow": "true"}]
)
allow_lists = st.sampled_from([[], [], ["debian:*"], ["python:*", "potluck-test:*"]])
requests = st.builds(
    lambda c, m, labels, image, network: (
        Capacity(cpus=c, memory_bytes=m * GIB, disk_bytes=GIB),
        labels,
        image,
        network,
    ),
    st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    st.integers(1, 6),
    st.sampled_from([{}, {}, {"arch": "arm64"}, {"gpu": "yes"}, {"hollow": "true"}]),
    st.sampled_from([None, *IMAGES]),
    st.booleans(),
)
CHANGES = (
    *("suspect", "recover", "pause", "resume", "throttle", "freeze", "restore", "deregister"),
    *("engine_lost", "engine_returned"),
)


class Allocator(RuleBasedStateMachine):
    hosts = Bundle("hosts")
    queued = Bundle("queued")
    landed = Bundle("landed")

    def __init__(self) -> None:
        super().__init__()
        self.log = RecordingLog()
        self.model = AllocatorModel()
        self.fold = Fold(self.model, reader="test")
        self.in_flight = InFlightRequests()
        self.appends: dict[str, list[StreamAppend]] = {}
        self.counter = 0

    def commit(self, stream: str, *events: Event) -> None:
        self.fold.apply_all(self.log.add(stream, *events))

    @property
    def outlook(self) -> Outlook:
        return Outlook(self.model, self.in_flight)

    @rule(target=hosts, donated=donations, labels=label_sets, allowed=allow_lists, network=st.booleans())
    def register(self, donated: Capacity, labels: dict[str, str], allowed: list[str], network: bool) -> str:
        self.counter += 1
        host_id = f"h{self.counter}"
        self.commit(
            host_stream(host_id),
            HostEnrolled(host_id=host_id, name=host_id, nkey="U"),
            host_registered(
                host_id=host_id,
                donated=donated,
                labels=labels,
                allowed_images=allowed,
                allow_network=network,
                engine=ENGINE,
                hostd_version="t",
            ),
        )
        return host_id

    @rule(host_id=hosts, change=st.sampled_from(CHANGES))
    def change(self, host_id: str, change: str) -> None:
        event = {
            "suspect": HostSuspected(host_id=host_id, silent_for_s=20),
            "recover": HostRecovered(host_id=host_id, was="suspect"),
            "pause": HostPaused(host_id=host_id, by="member"),
            "resume": HostResumed(host_id=host_id, by="member"),
            "throttle": HostThrottled(host_id=host_id, cause="owner", reason="busy", share_cpus=0.5),
            "freeze": HostFrozen(host_id=host_id, cause="battery", reason="battery", max_frozen_s=60),
            "restore": HostShareRestored(host_id=host_id),
            "engine_lost": HostEngineLost(host_id=host_id, detail="gone"),
            "engine_returned": HostEngineReturned(host_id=host_id),
            "deregister": HostDeregistered(host_id=host_id, by="member"),
        }[change]
        self.commit(host_stream(host_id), event)

    @rule(host_id=hosts, held=st.sets(st.sampled_from(IMAGES)))
    def report_images(self, host_id: str, held: set[str]) -> None:
        self.commit(
            images_stream(host_id), HostImagesReported(host_id=host_id, images=sorted(HELD[i] for i in held))
        )

    @rule(target=queued, wanted=requests, strategy=st.sampled_from(["best_fit", "spread"]))
    def decide(self, wanted: tuple[Capacity, dict[str, str], str | None, bool], strategy: Strategy) -> object:
        resources, labels, image, network = wanted
        self.counter += 1
        alloc_id = f"a{self.counter}"
        request = AllocationRequested(
            alloc_id=alloc_id,
            user="u",
            spec=AllocationSpec(resources=resources, image=image or "busybox:1", network=network),
            lifetime_s=60,
            constraints=labels,
        )
        decision = self.outlook.place(request, strategy)
        assert decision == self.plain(placement_request(request), strategy)
        if not isinstance(decision, Placed):
            return multiple()
        host_id = decision.host_id
        # Hollow hosts (scale tests) run nothing: only requests constrained to them go there.
        assert is_hollow(self.model.hosts.hosts[host_id].labels) == wants_hollow(placement_request(request))
        self.appends[alloc_id] = placement(
            request,
            host_id,
            now=T0,
            alloc_version=0,
            capacity_version=self.outlook.capacity_version(host_id),
            preceding=[request],
        )
        self.in_flight.add(InFlight(alloc_id, "u", resources, host_id))
        return alloc_id

    @rule(target=landed, alloc_id=consumes(queued))
    def land(self, alloc_id: str) -> object:
        """The append commits and the model folds it; the request then no longer counts in flight.
        Landing out of queue order, it may expect a version another landed first: it is refused,
        as the log refuses it, and counts no more."""
        try:
            recorded = self.log.append(self.appends[alloc_id])
        except WrongExpectedVersion:
            self.in_flight.settle(alloc_id)
            return multiple()
        self.fold.apply_all(recorded)
        self.in_flight.settle(alloc_id)
        return alloc_id

    @rule(alloc_id=consumes(queued))
    def fail(self, alloc_id: str) -> None:
        self.in_flight.settle(alloc_id)

    @rule(alloc_id=consumes(landed))
    def free(self, alloc_id: str) -> None:
        reserved = self.appends[alloc_id][-1]
        host_id = reserved.stream.removeprefix("capacity-")
        amount = self.in_flight_amount(alloc_id)
        self.commit(
            capacity_stream(host_id), CapacityFreed(host_id=host_id, alloc_id=alloc_id, amount=amount)
        )

    def in_flight_amount(self, alloc_id: str) -> Capacity:
        placed = self.appends[alloc_id][0].events[-1]
        assert isinstance(placed, AllocationPlaced)
        return placed.spec.resources

    def snapshots(self) -> list[HostSnapshot]:
        return host_snapshots(
            self.model.hosts,
            self.model.ledger,
            in_flight=self.outlook.reservations(),
            images=self.model.host_images,
        )

    def plain(self, request: PlacementRequest, strategy: Strategy) -> Decision:
        return place(self.snapshots(), request, strategy)

    @invariant()
    def decides_as_the_plain_rule(self) -> None:
        index = self.model.placement.current(
            self.model.hosts, self.model.ledger, self.model.host_images, self.in_flight
        )
        assert index.snapshots() == self.snapshots()
        for strategy in STRATEGIES:
            for probe in PROBES:
                assert index.place(probe, strategy) == self.plain(probe, strategy), (probe, strategy)


Allocator.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(autouse=True)
def every_path_indexed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Scheduler, "SMALL_CANDIDATES", 0)


def test_the_index_decides_as_the_plain_rule() -> None:
    """Hosts come, change and go, requests are decided, land or fail, capacity is freed: at every
    step the allocator's kept index decides every probe exactly as the rule over fresh snapshots."""
    Allocator.TestCase("runTest").runTest()


def test_other_requests_in_flight_rebuild_the_index() -> None:
    """An Outlook with another set of requests in flight than the last one sees its reservations:
    the index is built anew rather than kept from the other set."""
    log = RecordingLog()
    model = AllocatorModel()
    fold = Fold(model, reader="test")
    fold.apply_all(
        log.add(
            host_stream("h1"),
            HostEnrolled(host_id="h1", name="h1", nkey="U"),
            host_registered(
                host_id="h1",
                donated=Capacity(cpus=2, memory_bytes=4 * GIB, disk_bytes=10 * GIB),
                engine=ENGINE,
                hostd_version="t",
            ),
        )
    )
    wanted = AllocationRequested(
        alloc_id="a9",
        user="u",
        spec=AllocationSpec(resources=Capacity(cpus=2, memory_bytes=GIB, disk_bytes=GIB), image="busybox:1"),
        lifetime_s=60,
    )
    assert Outlook(model, InFlightRequests()).place(wanted, "best_fit") == Placed("h1")
    busy = InFlightRequests()
    busy.add(InFlight("a1", "u", Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB), "h1"))
    assert not isinstance(Outlook(model, busy).place(wanted, "best_fit"), Placed)
