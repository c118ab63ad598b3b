"""The allocator's caps on open HTTP connections (services/allocator/connection_caps.py)."""

import resource

from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.connection_caps import MAX_CONNECTIONS, ConnectionCaps, total_cap


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
