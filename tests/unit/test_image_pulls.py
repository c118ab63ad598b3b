"""The pure decisions behind pulling a missing image, without servers.

What must hold: a host's first pull report makes its placed allocation `pulling`, later ones
are logged as progress at most every PULL_PROGRESS_EVERY (and when the pull is complete), and
none changes an allocation that runs or ended; a pulling allocation is active (it holds its
capacity, may expire or be released) and starts running from `pulling`; a host's account
that lists it as pulling does not judge it missing. The allocator grants a host a token only
for the image of an allocation placed on that host, only for that one repository and only
to pull. hostd sums the engine's per-layer progress. The API's image pattern admits only what
parses as a reference.
"""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck.allocator.image_tokens import grant_image_token, library_copy, pool_repository
from potluck.allocator.lifecycle import PULL_PROGRESS_EVERY, PULL_PROGRESS_SLOW, decide, decide_actual_state
from potluck.allocator.pool_registry import PoolRegistry
from potluck.allocator.registry_tokens import TokenIssuer
from potluck.allocator.schemas import CreateAllocation
from potluck.contracts.allocation_events import (
    AllocationFailed,
    AllocationPulling,
    AllocationPullProgressed,
    AllocationRunning,
    AllocationSpec,
    AllocationUnplaced,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.image_reference import REFERENCE_PATTERN, InvalidReference, parse_reference
from potluck.contracts.messages import ImageTokenRequest
from potluck.contracts.reports import (
    ActualState,
    ContainerFailed,
    ContainerPulling,
    ContainerStarted,
)
from potluck.events import PoisonMessage
from potluck.hostd.image_pull import PullProgress
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import ACTIVE, AllocationState, AllocationsView, evolve

GIB = 1 << 30
REGISTRY = "127.0.0.1:5000"
IMAGE = f"{REGISTRY}/alice/tiny:1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def alloc(status: str = "placed", host_id: str = "h1", image: str = IMAGE, **more: object) -> AllocationState:
    state = AllocationState(
        alloc_id="a1",
        user="alice",
        spec=AllocationSpec(resources=Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB), image=image),
        lifetime_s=600,
        host_id=host_id,
        version=3,
        placed_position=10,
    )
    return replace(state, status=status, **more)  # type: ignore[arg-type]


def pull_report(done: int = 0, total: int = 0) -> ContainerPulling:
    return ContainerPulling(alloc_id="a1", image=IMAGE, done_bytes=done, total_bytes=total)


# The allocator's lifecycle decisions.


def test_the_first_pull_report_makes_a_placed_allocation_pulling() -> None:
    decision = decide(alloc(), "h1", pull_report(), now=NOW)
    assert decision is not None
    assert decision.alloc_events == [AllocationPulling(alloc_id="a1", host_id="h1", image=IMAGE)]
    assert decision.expected == 3
    assert not decision.capacity_events  # still reserved


def test_progress_is_logged_at_most_every_interval_and_when_complete() -> None:
    pulling = alloc("pulling", pull_done_bytes=0, pull_total_bytes=0, pull_logged_at=NOW)
    assert decide(pulling, "h1", pull_report(10, 100), now=NOW + timedelta(seconds=1)) is None
    later = decide(pulling, "h1", pull_report(10, 100), now=NOW + PULL_PROGRESS_EVERY)
    assert later is not None
    assert later.alloc_events == [
        AllocationPullProgressed(alloc_id="a1", host_id="h1", done_bytes=10, total_bytes=100)
    ]
    complete = decide(pulling, "h1", pull_report(100, 100), now=NOW + timedelta(seconds=1))
    assert complete is not None
    assert isinstance(complete.alloc_events[0], AllocationPullProgressed)
    same = replace(pulling, pull_done_bytes=100, pull_total_bytes=100)
    assert decide(same, "h1", pull_report(100, 100), now=NOW + timedelta(hours=1)) is None


def test_a_trickling_pull_is_logged_once_a_minute_not_every_five_seconds() -> None:
    """Tried: a pull of 1 GB that moves by 1 KB between reports, reported past the 5 s
    interval, then past the slow one. Must hold: nothing is logged until PULL_PROGRESS_SLOW has
    passed since the last event (then once); a move of 2% is logged after 5 s as before."""
    gb = 1 << 30
    pulling = alloc("pulling", pull_done_bytes=gb // 2, pull_total_bytes=gb, pull_logged_at=NOW)
    crawl = pull_report(gb // 2 + 1024, gb)
    assert decide(pulling, "h1", crawl, now=NOW + PULL_PROGRESS_EVERY) is None
    assert decide(pulling, "h1", crawl, now=NOW + PULL_PROGRESS_SLOW - timedelta(seconds=1)) is None
    slow = decide(pulling, "h1", crawl, now=NOW + PULL_PROGRESS_SLOW)
    assert slow is not None
    assert slow.alloc_events == [
        AllocationPullProgressed(alloc_id="a1", host_id="h1", done_bytes=gb // 2 + 1024, total_bytes=gb)
    ]
    stride = decide(pulling, "h1", pull_report(gb // 2 + gb // 50, gb), now=NOW + PULL_PROGRESS_EVERY)
    assert stride is not None


@pytest.mark.parametrize("status", ["running", "failed", "released", "expired"])
def test_a_late_pull_report_changes_nothing(status: str) -> None:
    assert decide(alloc(status), "h1", pull_report(5, 10), now=NOW) is None


def test_only_the_host_it_is_placed_on_reports_its_pull() -> None:
    with pytest.raises(PoisonMessage):
        decide(alloc(), "h2", pull_report(), now=NOW)


def test_a_pulling_allocation_starts_running_fails_and_is_active() -> None:
    pulling = alloc("pulling")
    assert "pulling" in ACTIVE
    started = decide(pulling, "h1", ContainerStarted(alloc_id="a1", container_id="c1"))
    assert started is not None
    assert isinstance(started.alloc_events[0], AllocationRunning)
    failed = decide(
        pulling, "h1", ContainerFailed(alloc_id="a1", reason="image_pull_failed", detail="registry down")
    )
    assert failed is not None
    # The image, not the allocation, was the trouble: it goes back to be placed elsewhere
    # (tests/unit/test_replacement.py), its reservation here freed in the same append.
    assert isinstance(failed.alloc_events[0], AllocationUnplaced)
    assert failed.capacity_events


def test_the_hosts_account_does_not_judge_a_pulling_allocation_missing() -> None:
    report = ActualState(as_of_position=20, containers=[], pulling=["a1"])
    assert decide_actual_state([alloc("pulling")], "h1", report) == []
    assert decide_actual_state([alloc("placed")], "h1", report) == []
    missing = decide_actual_state([alloc("pulling")], "h1", ActualState(as_of_position=20, containers=[]))
    assert len(missing) == 1
    failure = missing[0].alloc_events[0]
    assert isinstance(failure, AllocationFailed)
    assert failure.reason == "container_missing"


def test_the_read_model_folds_pulling_and_its_progress() -> None:
    state: AllocationState | None = alloc()
    state = evolve(state, AllocationPulling(alloc_id="a1", host_id="h1", image=IMAGE), 4, NOW)
    assert state is not None
    assert state.status == "pulling"
    assert state.pull_done_bytes == 0
    progressed = AllocationPullProgressed(alloc_id="a1", host_id="h1", done_bytes=7, total_bytes=9)
    state = evolve(state, progressed, 5, NOW + timedelta(seconds=6))
    assert state is not None
    assert (state.status, state.pull_done_bytes, state.pull_total_bytes) == ("pulling", 7, 9)
    assert state.pull_logged_at == NOW + timedelta(seconds=6)
    view = AllocationsView(allocations={"a1": state})
    assert [a.alloc_id for a in view.desired_for("h1")] == ["a1"]


# The allocator's tokens for hosts.

_KEY = ec.generate_private_key(ec.SECP256R1())


def _registry() -> PoolRegistry:
    return PoolRegistry(REGISTRY, TokenIssuer(_KEY))


def _view(*states: AllocationState) -> AllocationsView:
    return AllocationsView(allocations={s.alloc_id: s for s in states})


def test_a_host_gets_a_pull_token_for_its_own_allocations_image_only() -> None:
    token = grant_image_token(
        _view(alloc("pulling")), _registry(), "h1", ImageTokenRequest(alloc_id="a1", image=IMAGE)
    )
    assert token.repository == "alice/tiny"
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["sub"] == "host:h1"
    assert claims["access"] == [{"type": "repository", "name": "alice/tiny", "actions": ["pull"]}]


@pytest.mark.parametrize(
    ("state", "host", "image", "code"),
    [
        (alloc("pulling"), "h2", IMAGE, "NOT_YOUR_ALLOCATION"),
        (alloc("pulling"), "h1", f"{REGISTRY}/bob/secret:1", "NOT_ITS_IMAGE"),
        (alloc("released"), "h1", IMAGE, "NOT_ACTIVE"),
        (alloc("pulling", image="debian:12"), "h1", "debian:12", "NOT_IN_POOL_REGISTRY"),
    ],
)
def test_anything_else_is_refused_saying_why(
    state: AllocationState, host: str, image: str, code: str
) -> None:
    with pytest.raises(Rejected) as refused:
        grant_image_token(_view(state), _registry(), host, ImageTokenRequest(alloc_id="a1", image=image))
    assert refused.value.code == code
    with pytest.raises(Rejected) as unknown:
        grant_image_token(_view(), _registry(), "h1", ImageTokenRequest(alloc_id="zz", image=IMAGE))
    assert unknown.value.code == "NOT_YOUR_ALLOCATION"
    with pytest.raises(Rejected) as none:
        grant_image_token(_view(state), None, "h1", ImageTokenRequest(alloc_id="a1", image=IMAGE))
    assert none.value.code == "NO_POOL_REGISTRY"


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        (f"{REGISTRY}/alice/tiny:1", "alice/tiny"),
        (f"{REGISTRY}/alice/tiny", "alice/tiny"),
        (f"{REGISTRY}/alice/a/b@sha256:{'a' * 64}", "alice/a/b"),
        (f"{REGISTRY}/alice/tiny:1@sha256:{'a' * 64}", "alice/tiny"),
        ("127.0.0.1:50001/alice/tiny:1", None),
        ("debian:12", None),
    ],
)
def test_pool_repository_of_an_image(image: str, repository: str | None) -> None:
    assert pool_repository(REGISTRY, image) == repository


@pytest.mark.parametrize(
    ("image", "copy"),
    [
        ("potluck-default:latest", ("library/potluck-default", "latest")),
        ("potluck-default", ("library/potluck-default", "latest")),
        ("python:3.12", ("library/python", "3.12")),
        ("docker.io/library/python:3.12", ("library/python", "3.12")),
        ("bob/sim:1", None),  # a Docker Hub user's repository: not the pool's to stand for
        (f"python@sha256:{'a' * 64}", None),  # a digest: a copy's tag cannot stand for it
        (f"{REGISTRY}/alice/tiny:1", None),
        ("registry.example.org/python:3", None),
        ("Not A Reference", None),
    ],
)
def test_only_docker_hub_official_names_with_a_tag_have_a_library_copy(
    image: str, copy: tuple[str, str] | None
) -> None:
    assert library_copy(image) == copy


def test_a_library_copy_is_granted_only_when_the_library_holds_it() -> None:
    """Tried: a host pulling `potluck-default:latest` for its allocation, the library holding it
    or not. Must hold: with it, a pull-only token for `library/potluck-default` and the copy's
    reference to pull; without it, NOT_IN_POOL_REGISTRY (pulled from Docker Hub as before); for
    another host's allocation, refused whatever the library holds."""
    image = "potluck-default:latest"
    view = _view(alloc("pulling", image=image))
    request = ImageTokenRequest(alloc_id="a1", image=image)
    token = grant_image_token(view, _registry(), "h1", request, library_holds=True)
    assert (token.repository, token.reference) == (
        "library/potluck-default",
        f"{REGISTRY}/library/potluck-default:latest",
    )
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["access"] == [
        {"type": "repository", "name": "library/potluck-default", "actions": ["pull"]}
    ]
    with pytest.raises(Rejected) as absent:
        grant_image_token(view, _registry(), "h1", request)
    assert absent.value.code == "NOT_IN_POOL_REGISTRY"
    with pytest.raises(Rejected) as elsewhere:
        grant_image_token(view, _registry(), "h2", request, library_holds=True)
    assert elsewhere.value.code == "NOT_YOUR_ALLOCATION"
    pool_image = grant_image_token(
        _view(alloc("pulling")), _registry(), "h1", ImageTokenRequest(alloc_id="a1", image=IMAGE)
    )
    assert pool_image.reference is None  # a pool image is pulled by its own name


def test_every_user_may_run_library_images_but_not_another_users() -> None:
    registry = _registry()
    registry.check_image("bob", f"{REGISTRY}/library/potluck-default:latest")
    with pytest.raises(Rejected) as refused:
        registry.check_image("bob", IMAGE)
    assert refused.value.code == "IMAGE_FORBIDDEN"


def test_a_host_gets_no_token_for_a_repository_its_allocations_user_may_not_pull() -> None:
    """Tried: bob's allocation names alice's repository (as one asked of an allocator running
    without the registry's address would), and is placed on h1, which asks for its token. Must
    hold: refused (NOT_ITS_USERS): a host's token never reaches past what the allocation's user
    may pull; alice's own allocation of it, and bob's of the library, still get theirs."""
    with pytest.raises(Rejected) as refused:
        grant_image_token(
            _view(alloc("pulling", user="bob")),
            _registry(),
            "h1",
            ImageTokenRequest(alloc_id="a1", image=IMAGE),
        )
    assert refused.value.code == "NOT_ITS_USERS"
    assert (
        grant_image_token(
            _view(alloc("pulling")), _registry(), "h1", ImageTokenRequest(alloc_id="a1", image=IMAGE)
        ).repository
        == "alice/tiny"
    )
    library = f"{REGISTRY}/library/potluck-default:1"
    assert (
        grant_image_token(
            _view(alloc("pulling", user="bob", image=library)),
            _registry(),
            "h1",
            ImageTokenRequest(alloc_id="a1", image=library),
        ).repository
        == "library/potluck-default"
    )


@pytest.mark.parametrize(
    "image",
    [
        "Pool.Example.org:5050/alice/tiny:1",
        "pool.example.org:5050/alice/tiny:1",
        "POOL.EXAMPLE.ORG:5050/alice/tiny@sha256:" + "a" * 64,
    ],
)
def test_another_users_image_is_refused_whatever_the_case_of_the_registrys_host(image: str) -> None:
    """Tried: the pool registry's address written with capitals (as an operator may give it);
    bob names alice's image with the registry's host in another case. Must hold: refused as
    IMAGE_FORBIDDEN, never passed as "another registry" (it is the same registry to DNS and to
    the engine, which hostd hands the normalised name, so the host's cached copy of alice's
    image would answer it); alice herself may name it any of these ways, and it is her
    repository that a host would be granted for it."""
    registry = PoolRegistry("Pool.Example.org:5050", TokenIssuer(_KEY))
    with pytest.raises(Rejected) as refused:
        registry.check_image("bob", image)
    assert refused.value.code == "IMAGE_FORBIDDEN"
    registry.check_image("alice", image)
    assert pool_repository(registry.address, image) == "alice/tiny"


# hostd's reading of the engine's pull stream.


def test_pull_progress_sums_layers_and_counts_finished_ones_whole() -> None:
    progress = PullProgress()
    progress.update({"status": "Pulling from alice/tiny", "id": "1"})
    progress.update({"status": "Downloading", "id": "l1", "progressDetail": {"current": 5, "total": 10}})
    progress.update({"status": "Downloading", "id": "l2", "progressDetail": {"current": 1, "total": 30}})
    assert (progress.done_bytes, progress.total_bytes) == (6, 40)
    progress.update({"status": "Download complete", "id": "l1", "progressDetail": {}})
    progress.update({"status": "Extracting", "id": "l1", "progressDetail": {"current": 3, "total": 99}})
    assert (progress.done_bytes, progress.total_bytes) == (11, 40)
    progress.update({"status": "Pull complete", "id": "l2"})
    assert (progress.done_bytes, progress.total_bytes) == (40, 40)


# The API's image field.


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.from_regex(REFERENCE_PATTERN, fullmatch=True))
def test_what_the_api_pattern_admits_parses_as_a_reference(text: str) -> None:
    if len(text) <= 255:  # the API's length bound
        assert parse_reference(text).repository


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="aZ09:/.@_-", max_size=40))
def test_what_does_not_parse_the_api_refuses(text: str) -> None:
    try:
        parse_reference(text)
    except InvalidReference:
        assert not re.fullmatch(REFERENCE_PATTERN, text)


@pytest.mark.parametrize("image", ["a//b", "Alice", "x:", "img:1@sha256:zz", "-a", "a/", "UP/Case:"])
def test_a_non_reference_image_is_refused_naming_the_field(image: str) -> None:
    with pytest.raises(ValueError, match="image") as refused:
        CreateAllocation.model_validate({"cpus": 1.0, "memory": "64M", "image": image})
    assert "not an image reference" in str(refused.value)
