"""Reading whose socket a loopback request came from out of the kernel's TCP tables
(services/allocator/web/peer.py), on lines as Linux writes them."""

from potluck.allocator.web.peer import owner_in

HEADING = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
#: Both ends of one IPv4 connection 127.0.0.1:39828 -> 127.0.0.1:52335, the client's owned by
#: 1000 and the server's by 999, then the server's listening socket (state 0A).
TAIL = "00000000:00000000 00:00000000 00000000"
TCP = [
    HEADING,
    f"  97: 0100007F:9B94 0100007F:CC6F 01 {TAIL}  1000        0 2909922 2 0 20 0 0 10 -1",
    f" 191: 0100007F:CC6F 0100007F:9B94 01 {TAIL}   999        0 2909923 1 0 20 0 0 10 -1",
    f"   0: 0100007F:CC6F 00000000:0000 0A {TAIL}   999        0 2891847 1 0 100 0 0 10 0",
]
#: [::1]:56717 <- [::1]:34346, and an IPv4-mapped pair, as tcp6 lists them.
TCP6 = [
    "   1: 00000000000000000000000001000000:862A 00000000000000000000000001000000:DD8D 01 "
    "00000000:00000000 00:00000000 00000000  1001        0 2909915 1 0 20 0 0 10 -1",
    "   2: 0000000000000000FFFF00000100007F:BB42 0000000000000000FFFF00000100007F:95AD 01 "
    "00000000:00000000 00:00000000 00000000  1002        0 2909920 1 0 20 0 0 10 -1",
]


def test_the_client_ends_owner_is_read_and_not_the_servers() -> None:
    """Tried: the IPv4 table with both ends of a connection and a listening socket. Must hold:
    the client's end (its own address first) gives its owner, 1000; asked the other way round,
    the server's, 999; a port pair nobody holds, None."""
    assert owner_in(TCP, ("127.0.0.1", 39828), ("127.0.0.1", 52335)) == 1000
    assert owner_in(TCP, ("127.0.0.1", 52335), ("127.0.0.1", 39828)) == 999
    assert owner_in(TCP, ("127.0.0.1", 39829), ("127.0.0.1", 52335)) is None


def test_ipv6_and_ipv4_mapped_ends_are_found_as_the_server_names_them() -> None:
    """Tried: the tcp6 table with a ::1 connection and an IPv4-mapped one, the request's ends
    spelled as aiohttp gives them (`::1`, `::ffff:127.0.0.1`, or plain 127.0.0.1). Must hold:
    each finds its owner; a listening or unknown socket is never taken for one."""
    assert owner_in(TCP6, ("::1", 0x862A), ("::1", 0xDD8D)) == 1001
    assert owner_in(TCP6, ("::ffff:127.0.0.1", 0xBB42), ("::ffff:127.0.0.1", 0x95AD)) == 1002
    assert owner_in(TCP6, ("127.0.0.1", 0xBB42), ("127.0.0.1", 0x95AD)) == 1002
    assert owner_in(TCP6 + TCP, ("127.0.0.1", 0xCC6F), ("0.0.0.0", 0)) is None
