"""Which registries a user's image name may send a member's engine to (hostd's local_registries,
on the literal checks of potluck.contracts.registry_locality)."""

import asyncio
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.registry_locality import host_of, local_address, local_registry_of, named_registries
from potluck.hostd.local_registries import local_registry_refusal

#: What a resolver of the member's network would say; a name not here does not resolve.
NAMES = {
    "registry.lan": ["192.168.1.20"],
    "mixed.example": ["93.184.215.14", "10.0.0.5"],
    "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
}


async def _resolver(host: str) -> list[str]:
    if host not in NAMES:
        raise OSError(f"{host} does not resolve")
    return NAMES[host]


def refusal(registry: str, named: frozenset[str] = frozenset()) -> str | None:
    return asyncio.run(local_registry_refusal(registry, named, _resolver))


@pytest.mark.parametrize(
    "registry",
    [
        "127.0.0.1:22",
        "127.8.9.10:5000",
        "localhost:5000",
        "LocalHost:5000",
        "pool.localhost",
        "[::1]:5000",
        "[::ffff:127.0.0.1]:80",
        "0.0.0.0:80",
        "10.1.2.3",
        "172.16.0.1:443",
        "192.168.1.1:80",
        "100.64.0.1:5000",
        "169.254.169.254",
        "[fd00::1]:5000",
        "[fe80::1]:5000",
        "224.0.0.1:80",
        "registry.lan:5000",
        "mixed.example",  # one local address is enough: the engine may dial any of them
    ],
)
def test_a_registry_on_the_members_machine_or_network_is_refused_saying_where(registry: str) -> None:
    said = refusal(registry)
    assert said is not None
    assert f"the registry {registry} is on this host's own machine or network" in said
    assert "potluck image push" in said


@pytest.mark.parametrize(
    "registry", ["docker.io", "public.example:5000", "93.184.215.14:443", "gone.example"]
)
def test_a_global_registry_or_one_that_does_not_resolve_is_left_to_the_engine(registry: str) -> None:
    assert refusal(registry) is None


def test_a_registry_the_member_names_is_pulled_from_even_on_the_members_network() -> None:
    named = named_registries(["127.0.0.1:5000/team/*:*", "registry.lan:5000/tool:1"])
    assert refusal("127.0.0.1:5000", named) is None
    assert refusal("registry.lan:5000", named) is None
    # Another port of the same machine is another registry: still refused.
    assert refusal("127.0.0.1:5001", named) is not None


def test_only_registries_written_without_wildcards_are_named() -> None:
    named = named_registries(
        ["*/x:y", "127.0.0.?:5000/x:*", "debian:*", "localhost:5000/a:*", "not a pattern!"]
    )
    assert named == frozenset({"docker.io", "localhost:5000"})


@pytest.mark.parametrize(
    ("registry", "host"),
    [
        ("example.org:443", "example.org"),
        ("example.org", "example.org"),
        ("[::1]:5000", "::1"),
        ("[::1]", "::1"),
    ],
)
def test_the_host_of_a_registry_drops_its_port(registry: str, host: str) -> None:
    assert host_of(registry) == host


@given(st.ip_addresses())
def test_an_address_is_local_exactly_when_it_is_not_a_global_unicast_one(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    seen = mapped or address
    assert local_address(str(address)) == (not seen.is_global or seen.is_multicast)


def test_a_name_is_never_an_address() -> None:
    assert not local_address("registry.lan")


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("127.0.0.1:22/x:1", "127.0.0.1:22"),
        ("localhost:5000/team/tool", "localhost:5000"),
        ("192.168.1.1:80/x@sha256:" + "a" * 64, "192.168.1.1:80"),
        # A name is the host's to resolve: the allocator cannot know the member's network.
        ("registry.lan:5000/x:1", None),
        ("python:3.12", None),
        ("ghcr.io/org/tool:1", None),
        # The pool registry is reached with the allocator's token, wherever it runs.
        ("127.0.0.1:5000/alice/tool:1", None),
        ("not an image!", None),
    ],
)
def test_the_allocator_knows_a_literally_local_registry_by_the_image_name_alone(
    image: str, registry: str | None
) -> None:
    assert local_registry_of(image, "127.0.0.1:5000") == registry


def test_without_a_pool_registry_every_literally_local_registry_is_one() -> None:
    assert local_registry_of("127.0.0.1:5000/alice/tool:1", None) == "127.0.0.1:5000"
