"""The pure parts of running on a NATS cluster: server lists and stream replicas."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from potluck.events.bus import STREAMS, check_replicas, replicas_to_apply
from potluck.hostd.config import HostdConfig
from potluck.kernel.nats_urls import nats_servers


def test_a_comma_separated_url_names_each_node_in_order() -> None:
    """Tried: one URL, and a cluster's three with spaces. Must hold: each server once, in order, trimmed."""
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers("nats://a:4222, nats://b:4222 ,tls://c:4222") == [
        "nats://a:4222",
        "nats://b:4222",
        "tls://c:4222",
    ]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("", "no NATS server given"),
        ("nats://a:4222,,nats://b:4222", "empty entry"),
        ("nats://a:4222,b:4222", "'b:4222' must start with nats://"),
        ("http://a:4222", "must start with nats://"),
    ],
)
def test_a_bad_server_list_is_refused_naming_the_bad_entry(url: str, said: str) -> None:
    """Tried: empty, a doubled comma, a node without scheme, a wrong scheme. Must hold: a
    ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=said):
        nats_servers(url)


@given(existing=st.one_of(st.none(), st.integers(1, 5)), wanted=st.one_of(st.none(), st.integers(1, 5)))
def test_only_a_caller_that_asks_changes_a_streams_replicas(existing: int | None, wanted: int | None) -> None:
    """Tried: every stream state (absent or 1..5 copies) and every request (none or 1..5).
    Must hold: a request is applied as asked; no request keeps the copies a stream has, and a
    new stream gets one (the relay and subscribers never undo an operator's choice)."""
    applied = replicas_to_apply(existing, wanted)
    if wanted is not None:
        assert applied == wanted
    else:
        assert applied == (existing or 1)


@pytest.mark.parametrize("replicas", [0, 6, -1])
def test_replicas_jetstream_cannot_keep_are_refused(replicas: int) -> None:
    """Tried: 0, 6 and -1 copies. Must hold: a ValueError saying what to use instead."""
    with pytest.raises(ValueError, match="1 on a single nats-server and 3 on a three-node cluster"):
        check_replicas(replicas)


def test_every_stream_is_configured_with_the_replicas_given() -> None:
    """Tried: each stream's config at 3 copies and at the default. Must hold: 3, and 1."""
    for spec in STREAMS:
        assert spec.config(3).num_replicas == 3
        assert spec.config().num_replicas == 1


def test_hostd_takes_a_clusters_nodes_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """Tried: hostd's config with three nodes, then with one node missing its scheme. Must hold:
    the first is kept as written; the second is refused naming the entry."""
    common = {
        "host_id": "h-0123456789ab",
        "credentials_file": tmp_path / "c",
        "state_dir": tmp_path,
        "donate": {"cpus": 1, "memory": "1G", "disk": "2G"},
    }
    nodes = "nats://a:4222,nats://b:4222,nats://c:4222"
    assert HostdConfig(nats_url=nodes, **common).nats_url == nodes
    with pytest.raises(ValidationError, match="'b:4222' must start with nats://"):
        HostdConfig(nats_url="nats://a:4222,b:4222", **common)
