"""Image locality: hosts that already hold the image come first, and nothing else changes.

Each scenario runs against the plain `place` over snapshots and against a
`Scheduler` (small and large sets of holders take different paths in it).
The properties: with room on a host that holds the image, the request goes to
such a host; whether a request is placed, waits or is impossible never depends
on which images hosts hold; a placement never lands on a host whose member's
allow-list refuses the image, however many hosts hold it.
"""

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.capacity import host_snapshots
from potluck.allocator.model import AllocatorModel
from potluck.allocator.scheduler import (
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
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_images import (
    MAX_IMAGES_HELD,
    HostImagesReported,
    bounded,
    held_names,
    holds_image,
    image_keys,
    images_stream,
)
from potluck.contracts.image_reference import image_allowed
from potluck.contracts.reports import ImagesHeld
from potluck.events import RecordedEvent
from potluck.events.schema import encode

GIB = 1 << 30
DIGEST = "sha256:" + "ab" * 32
IMAGE = "potluck-default:latest"
HELD = frozenset({"docker.io/library/potluck-default:latest"})


def cap(cpus: float, memory: int = GIB, disk: int = 10 * GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def req(cpus: float = 1, image: str | None = IMAGE, n: int = 0) -> PlacementRequest:
    return PlacementRequest(alloc_id=f"a{n}", resources=cap(cpus, GIB, GIB), image=image)


Decide = Callable[[Sequence[HostSnapshot], PlacementRequest, Strategy], Decision]


def by_scan(hosts: Sequence[HostSnapshot], r: PlacementRequest, strategy: Strategy) -> Decision:
    return place(hosts, r, strategy)


def by_index(hosts: Sequence[HostSnapshot], r: PlacementRequest, strategy: Strategy) -> Decision:
    return Scheduler(hosts).place(r, strategy)


@pytest.fixture(params=[by_scan, by_index], ids=["place", "Scheduler"])
def decide(request: pytest.FixtureRequest) -> Decide:
    fn: Decide = request.param
    return fn


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_host_with_the_image_takes_requests_while_it_has_room(decide: Decide, strategy: Strategy) -> None:
    """Host b holds the image and has room for two: the first two go there, whichever host
    the strategy alone would choose; the third to a, which must pull."""
    hosts = {
        "a": HostSnapshot("a", cap(8, 8 * GIB)),
        "b": HostSnapshot("b", cap(2, 8 * GIB), held_images=HELD),
    }
    placed = []
    for n in range(3):
        decision = decide(list(hosts.values()), req(n=n), strategy)
        assert isinstance(decision, Placed)
        placed.append(decision.host_id)
        h = hosts[decision.host_id]
        hosts[h.host_id] = replace(h, reserved=h.reserved + cap(1, GIB, GIB))
    assert placed == ["b", "b", "a"]


def test_holding_the_image_never_overrides_the_allow_list(decide: Decide) -> None:
    """b holds the image but its member no longer allows it: the request goes to a, and with
    a gone it is impossible, not placed on b."""
    a = HostSnapshot("a", cap(8))
    b = HostSnapshot("b", cap(8), held_images=HELD, allowed_images=("debian:*",))
    assert decide([a, b], req(), "best_fit") == Placed("a")
    assert isinstance(decide([b], req(), "best_fit"), Impossible)


def test_holding_the_image_never_overrides_capacity_or_liveness(decide: Decide) -> None:
    full = HostSnapshot("b", cap(2), reserved=cap(2), held_images=HELD)
    paused = HostSnapshot("c", cap(2), schedulable=False, held_images=HELD)
    assert decide([HostSnapshot("a", cap(8)), full, paused], req(), "best_fit") == Placed("a")
    assert decide([full, paused], req(), "best_fit") == Wait("NO_FREE_CAPACITY")


@pytest.mark.parametrize(
    ("image", "held"),
    [
        ("potluck-default", "docker.io/library/potluck-default:latest"),
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}"),
        (f"alpine:3@{DIGEST}", f"docker.io/library/alpine@{DIGEST}"),
        ("127.0.0.1:5000/u-ann/tool:1", "127.0.0.1:5000/u-ann/tool:1"),
    ],
)
def test_a_request_matches_the_names_hostd_reports(decide: Decide, image: str, held: str) -> None:
    hosts = [HostSnapshot("a", cap(8)), HostSnapshot("b", cap(8), held_images=frozenset({held}))]
    assert decide(hosts, req(image=image), "best_fit") == Placed("b")
    assert holds_image(frozenset({held}), image)


def test_a_tag_is_not_another_tag_and_an_invalid_name_matches_nothing() -> None:
    assert not holds_image(HELD, "potluck-default:2")
    assert image_keys("Not A Reference") == ()
    assert not holds_image(HELD, None)


def test_held_names_normalise_tags_and_digests_and_drop_none() -> None:
    names = held_names(["busybox:1", "<none>:<none>"], [f"busybox@{DIGEST}", "<none>@<none>"])
    assert names == {"docker.io/library/busybox:1", f"docker.io/library/busybox@{DIGEST}"}


# --- properties ---------------------------------------------------------------------------------

IMAGES = ["debian:12", "alpine:3", "registry.example.org/acme/tool:1"]
NAMES = [f"docker.io/library/{i}" if "/" not in i else i for i in IMAGES]


@st.composite
def _pools(draw: st.DrawFn) -> tuple[list[HostSnapshot], PlacementRequest]:
    hosts = [
        HostSnapshot(
            f"h{i}",
            cap(draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 4])) * GIB),
            reserved=draw(st.sampled_from([ZERO, cap(1, GIB)])),
            labels=draw(st.sampled_from([{}, {"zone": "home"}])),
            schedulable=draw(st.booleans()),
            allowed_images=draw(st.sampled_from([(), ("debian:*",), ("registry.example.org/acme/*:*",)])),
            held_images=frozenset(draw(st.lists(st.sampled_from(NAMES), max_size=3))),
        )
        for i in range(draw(st.integers(0, 7)))
    ]
    r = PlacementRequest(
        "r",
        cap(draw(st.sampled_from([0.5, 1, 3])), GIB),
        constraints=draw(st.sampled_from([{}, {"zone": "home"}])),
        image=draw(st.sampled_from([None, *IMAGES])),
    )
    return hosts, r


@given(_pools(), st.sampled_from(STRATEGIES))
def test_locality_is_a_preference_among_hosts_that_admit_and_have_room(
    case: tuple[list[HostSnapshot], PlacementRequest], strategy: Strategy
) -> None:
    """Any pool, any request: both implementations decide alike; a placement is on a host that
    admits the image; if a schedulable host that admits it, matches and has room holds the
    image, the placement is on such a host; without the held images the outcome (placed,
    waiting, impossible and why) is the same."""
    hosts, r = case
    decision = place(hosts, r, strategy)
    assert Scheduler(hosts).place(r, strategy) == decision
    bare = place([replace(h, held_images=frozenset()) for h in hosts], r, strategy)
    assert type(bare) is type(decision)
    if not isinstance(decision, Placed):
        assert bare == decision
        return
    chosen = {h.host_id: h for h in hosts}[decision.host_id]
    assert r.image is None or image_allowed(chosen.allowed_images, r.image)
    could_hold = [
        h
        for h in hosts
        if h.schedulable
        and all(h.labels.get(k) == v for k, v in r.constraints.items())
        and (r.image is None or image_allowed(h.allowed_images, r.image))
        and r.resources.fits_in(h.free)
    ]
    if any(holds_image(h.held_images, r.image) for h in could_hold):
        assert holds_image(chosen.held_images, r.image)
    else:
        assert decision == bare


@pytest.mark.parametrize("seed", range(2))
def test_scheduler_agrees_with_place_when_many_hosts_hold_the_image(seed: int) -> None:
    """More holders than Scheduler.SMALL_CANDIDATES: the index path decides as `place` does."""
    rnd = random.Random(seed)
    scheduler = Scheduler()
    for i in range(400):
        scheduler.set_host(
            HostSnapshot(
                f"h{i:04d}",
                cap(rnd.choice([1, 2, 4, 8]), rnd.choice([2, 8]) * GIB),
                schedulable=rnd.random() > 0.1,
                allowed_images=rnd.choice([(), (), ("debian:*",)]),
                held_images=frozenset(rnd.sample(NAMES, rnd.randrange(3))),
            )
        )
    for n in range(300):
        r = PlacementRequest(f"r{n}", cap(rnd.choice([0.5, 1, 2, 4])), image=rnd.choice([None, *IMAGES]))
        strategy: Strategy = rnd.choice(["best_fit", "spread"])
        decision = scheduler.place(r, strategy)
        assert decision == place(scheduler.snapshots(), r, strategy), (n, r)
        if isinstance(decision, Placed):
            scheduler.reserve(decision.host_id, r.resources)
        if rnd.random() < 0.05:
            host_id = f"h{rnd.randrange(400):04d}"
            scheduler.set_host(replace(scheduler.snapshot(host_id), held_images=frozenset()))


def test_the_allocator_model_folds_the_images_each_host_reports() -> None:
    model = AllocatorModel()
    for version, images in enumerate([["docker.io/library/a:1"], ["docker.io/library/b:1"]], start=1):
        event = HostImagesReported(host_id="h1", images=images)
        record = RecordedEvent(
            position=version,
            stream=images_stream("h1"),
            version=version,
            event_id=uuid4(),
            type=event.type_name,
            schema_version=1,
            data_json=encode(event),
            metadata={},
            recorded_at=datetime(2025, 1, 1, tzinfo=UTC),
        )
        model.apply(event, record)
    assert model.images_on("h1") == frozenset({"docker.io/library/b:1"})
    assert model.images_versions["h1"] == 2
    assert model.images_on("h2") == frozenset()
    assert host_snapshots(model.hosts, model.ledger, images=model.host_images) == []


def test_a_report_fits_the_reports_stream_however_many_images_the_engine_holds() -> None:
    """An engine with thousands of long names: the report keeps tags before digests, stays
    within its bounds and, serialised, within the reports stream's 64 KiB messages."""
    tags = [f"registry.example.org:5000/some/long/path/image-{n:05d}:v{n}" for n in range(3000)]
    digests = [f"docker.io/library/img{n}@sha256:{n:064x}" for n in range(3000)]
    names = bounded([*digests, *tags])
    assert len(names) <= MAX_IMAGES_HELD
    assert all("@" not in n for n in names)
    assert len(ImagesHeld(images=names).model_dump_json()) < 64 * 1024
    assert bounded(["b:1", "a:1", "a:1"]) == ["a:1", "b:1"]
