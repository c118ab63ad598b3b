"""free_port never hands out a port twice in one process (real sockets on loopback).

A NATS cluster picks its nodes' client, route and monitoring ports before it starts any of
them; a random pick that came up twice gave two nodes one port, and the second node failed
with "address already in use" (a full suite's run on 2026-12-02).
"""

import socket

from potluck.localstack.ports import free_port


def test_ports_picked_before_any_is_bound_are_all_different_and_free() -> None:
    """Tried: 3,000 picks with none of them bound, as a caller that starts servers later would.
    Must hold: no port comes twice, and the last one given can still be bound."""
    picked = [free_port() for _ in range(3000)]
    assert len(set(picked)) == len(picked)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", picked[-1]))
