"""The allocator's caps on open HTTP connections (services/allocator/connection_caps.py)."""

import resource

from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.connection_caps import MAX_CONNECTIONS, ConnectionCaps, total_cap
from potluck.kernel.client_address import client_of


def test_each_address_has_its_share_and_all_share_the_total() -> None:
    """Tried: a cap of 2 per address and 3 in all. Must hold: a third connection from one
    address is refused while another address is admitted, until the total is reached; a
    release makes room again, for that address only as far as its share."""
    caps = ConnectionCaps(per_address=2, total=3)
    assert caps.admit("a", 0)
    assert caps.admit("a", 0)
    assert not caps.admit("a", 0)
    assert caps.admit("b", 0)
    assert not caps.admit("c", 0), "the total is reached"
    caps.release("a")
    assert caps.admit("c", 0)
    assert caps.open == 3


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc"))))
def test_counts_never_pass_the_caps_and_releases_give_back_what_was_taken(
    steps: list[tuple[bool, str]],
) -> None:
    """Tried: any sequence of connections and closes over three addresses. Must hold: no
    address ever holds more than its share, the open count never passes the total, and it
    equals the admitted connections not yet released."""
    caps = ConnectionCaps(per_address=2, total=4)
    held: list[str] = []
    for opening, address in steps:
        if opening:
            if caps.admit(address, 0):
                held.append(address)
        elif address in held:
            held.remove(address)
            caps.release(address)
        assert caps.open == len(held) <= 4
        assert all(held.count(a) <= 2 for a in "abc")


def test_the_total_leaves_half_the_open_files_to_the_rest() -> None:
    """Must hold: the total is MAX_CONNECTIONS where files are plenty, half the limit where
    they are not, and never 0."""
    assert total_cap(100_000) == MAX_CONNECTIONS
    assert total_cap(resource.RLIM_INFINITY) == MAX_CONNECTIONS
    assert total_cap(1024) == 512
    assert total_cap(1) == 1


def test_an_ipv6_client_is_its_64_and_an_ipv4_one_its_address_however_written() -> None:
    """Tried: addresses one IPv6 client may send from (any of its /64: privacy addresses
    rotate within it), another /64, IPv4 plain and IPv4-mapped, and what is no address.
    Must hold: a /64 is one client, another /64 another; an IPv4 address is itself however
    written; anything else is kept as it is (an empty one is "unknown")."""
    one = {client_of(a) for a in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3", "2001:DB8:1:2:0:0:0:9")}
    assert one == {"2001:db8:1:2::/64"}
    assert client_of("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_of("::ffff:192.0.2.7") == client_of("192.0.2.7") == "192.0.2.7"
    assert client_of("192.0.2.8") != client_of("192.0.2.7")
    assert client_of("not an address") == "not an address"
    assert client_of("") == client_of(None) == "unknown"


def test_addresses_of_one_ipv6_64_share_one_clients_cap() -> None:
    """Tried: connections from three addresses of one /64 against a cap of 2 per client, then
    one from another /64. Must hold: the third of the /64 is refused (counted per address, a
    /64 holder took the total cap with a handful of addresses); the other /64 is admitted."""
    caps = ConnectionCaps(per_address=2, total=10)
    assert caps.admit(client_of("2001:db8::1"), 0)
    assert caps.admit(client_of("2001:db8::2"), 0)
    assert not caps.admit(client_of("2001:db8::3"), 0)
    assert caps.admit(client_of("2001:db8:0:1::1"), 0)
