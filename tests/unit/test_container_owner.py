"""Whose a container is, and what hostd reads of it, from what an image cannot supply.

The engine merges an image's labels into each container made from it, wherever the create
call left a key out. What is tried here: inspects of containers as hostd makes them now, as
an older hostd made them (it left keys out), and as they look with an image's labels of
ours showing through (the audit's: another allocation's id, another's spec). What must
hold: the allocation comes from the container's name only, a spec only when it agrees with
that name, the network to remove only from the network mode; so a container from such an
image never claims another allocation's, and reconciliation never removes that one for it.
"""

from dataclasses import replace
from typing import Any

from potluck.hostd.container_config import (
    ContainerSpec,
    allocation_of,
    labels,
    own_network,
    spec_of,
)
from potluck.hostd.docker_driver import _managed
from potluck.hostd.reconciler import reconcile
from potluck.hostd.warm_pool import warm_labels

MiB = 1 << 20
HOST = "host-1"


def _spec(alloc_id: str, **changes: Any) -> ContainerSpec:
    spec = ContainerSpec(
        allocation_id=alloc_id, host_id=HOST, image="img:1", cpus=0.5, memory_bytes=64 * MiB,
        disk_bytes=64 * MiB, pids_limit=64, command=["sleep", "1"],
    )  # fmt: skip
    return replace(spec, **changes)


def _inspect(
    name: str, shown: dict[str, str], *, status: str = "running", network_mode: str = "none"
) -> dict[str, Any]:
    """The engine's inspect of a container named `name` whose labels are `shown` (merged)."""
    return {
        "Id": f"id-{name.strip('/')}",
        "Name": f"/{name}",
        "Config": {"Labels": shown},
        "HostConfig": {"NetworkMode": network_mode},
        "State": {
            "Status": status,
            "Running": status in ("running", "paused"),
            "StartedAt": "2025-01-01T00:00:00Z",
            "FinishedAt": "2025-01-01T01:00:00Z",
            "ExitCode": 0,
        },
    }


def _merged(image: dict[str, str], create: dict[str, str]) -> dict[str, str]:
    """What the engine shows: the image's labels, the create call's over them."""
    return {**image, **create}


def test_the_allocation_is_read_from_the_name_alone() -> None:
    assert allocation_of("/potluck-a1b2") == "a1b2"
    assert allocation_of("potluck-a1b2") == "a1b2"
    assert allocation_of("/potluck_warm_abc") == ""  # a warm container not taken
    assert allocation_of("/someone-else") == ""
    assert allocation_of("/potluck-") == ""
    assert allocation_of("/potluck-../x") == ""
    assert allocation_of("") == ""


def test_a_warm_container_with_an_images_allocation_label_claims_nothing() -> None:
    """The audit's HIGH finding, as reconciliation sees it: A's kept container (exited) and a
    warm container of B's image, which says potluck.allocation=A; made by an older hostd (the
    label shows) and by this one (set empty). Neither warm container is A's, nor anyone's;
    reconciliation leaves A's kept container alone; taken by B, it is B's."""
    a = _spec("alloc-a")
    kept = _managed(_inspect("potluck-alloc-a", labels(a), status="exited"))
    assert (kept.allocation_id, kept.spec) == ("alloc-a", a)
    image = {"potluck.allocation": "alloc-a", "potluck.spec": a.to_json()}
    older = {"potluck.host": HOST, "potluck.managed": "1", "potluck.warm": "1"}
    for create in (older, warm_labels(HOST)):
        warm = _managed(_inspect("potluck_warm_0123", _merged(image, create), status="paused"))
        assert warm.allocation_id == ""
        assert warm.spec is None
        taken = _managed(_inspect("potluck-alloc-b", _merged(image, create)))
        assert taken.allocation_id == "alloc-b"
        assert taken.spec is None  # A's spec, shown on B's container: not taken for B's
        # What hostd reconciles: every container found that names an allocation.
        found = [c for c in (kept, warm, taken) if c.allocation_id]
        plan = reconcile({"alloc-b": _spec("alloc-b")}, found, kept={"alloc-a"})
        assert kept not in plan.remove
        assert [c.allocation_id for c in plan.adopt] == ["alloc-b"]


def test_containers_of_an_older_hostd_are_still_known() -> None:
    """An older hostd's container of an allocation (its labels without potluck.warm), and its
    taken warm container (no allocation or spec label): the same allocation as before, the
    spec of the first as before."""
    a = _spec("alloc-a")
    old = {k: v for k, v in labels(a).items() if k != "potluck.warm"}
    own = _managed(_inspect("potluck-alloc-a", old))
    assert (own.allocation_id, own.spec) == ("alloc-a", a)
    taken = _managed(
        _inspect("potluck-alloc-b", {"potluck.host": HOST, "potluck.managed": "1", "potluck.warm": "1"})
    )
    assert (taken.allocation_id, taken.spec) == ("alloc-b", None)


def test_a_spec_is_taken_only_when_it_is_of_the_containers_own_allocation_and_host() -> None:
    a = _spec("alloc-a")
    assert spec_of(_inspect("potluck-alloc-a", labels(a))) == a
    assert spec_of(_inspect("potluck-alloc-b", {**labels(a), "potluck.host": HOST})) is None
    assert spec_of(_inspect("potluck-alloc-a", {**labels(a), "potluck.host": "host-2"})) is None
    assert spec_of(_inspect("potluck-alloc-a", {**labels(a), "potluck.spec": ""})) is None
    assert spec_of(_inspect("potluck-alloc-a", {**labels(a), "potluck.spec": "{}"})) is None
    assert spec_of(_inspect("potluck-alloc-a", {**labels(a), "potluck.spec": "[1]"})) is None


def test_the_network_removed_with_a_container_is_its_own_by_its_network_mode() -> None:
    """remove() takes down the allocation's own network, named after the container in its
    network mode; a spec label of another allocation's (with a network) names nothing."""
    a = _spec("alloc-a", network=True)
    assert (
        own_network(_inspect("potluck-alloc-a", labels(a), network_mode="potluck-alloc-a"))
        == "potluck-alloc-a"
    )
    assert own_network(_inspect("potluck-alloc-a", labels(_spec("alloc-a")))) is None
    spoofed = _merged({"potluck.spec": a.to_json()}, warm_labels(HOST))
    assert own_network(_inspect("potluck-alloc-b", spoofed)) is None
    assert own_network(_inspect("potluck_warm_1", spoofed, network_mode="potluck-alloc-a")) is None
    assert own_network(_inspect("elsewhere", {}, network_mode="elsewhere")) is None
