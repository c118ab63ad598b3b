"""The bounds Potluck gives every NATS client connection are the same wherever its servers are
configured: the configurations localstack generates (tests, `potluck up`) and ops/nats/*.conf
(docker-compose.yml's single server and cluster nodes)."""

from pathlib import Path

import pytest

from potluck.localstack.nats_server import NATS_CLIENT_LIMITS, NatsServer

OPS_NATS = Path(__file__).resolve().parents[2] / "ops" / "nats"


@pytest.mark.parametrize("name", ["nats-server.conf", "cluster.conf"])
def test_ops_configurations_carry_the_client_limits(name: str) -> None:
    """Tried: reading each compose configuration. Must hold: every line of NATS_CLIENT_LIMITS is
    in it, before the users file is included, so a compose pool is bounded as a local one is."""
    lines = (OPS_NATS / name).read_text().splitlines()
    include = lines.index('include "auth.json"')
    for limit in NATS_CLIENT_LIMITS.splitlines():
        assert limit in lines[:include], f"{name} lacks {limit!r}"


@pytest.mark.parametrize("name", ["nats-server.conf", "cluster.conf"])
def test_ops_configurations_serve_monitoring_on_loopback_only(name: str) -> None:
    """Tried: reading each compose configuration. Must hold: the monitoring endpoint (whose
    /connz names every connection's key, and which the registry's connection watch reads) is
    on, and listens on loopback only."""
    lines = [line.strip() for line in (OPS_NATS / name).read_text().splitlines()]
    assert [line for line in lines if line.startswith("http:")] == ['http: "127.0.0.1:8222"']


def test_a_local_server_with_users_serves_monitoring_on_loopback(tmp_path: Path) -> None:
    """Tried: the configuration localstack writes for a server that requires nkeys (tests,
    `potluck up`). Must hold: its monitoring endpoint is on loopback, where `monitor_urls` says."""
    server = NatsServer(tmp_path, authorization=True)
    assert server.config is not None
    assert f'http: "127.0.0.1:{server.monitor_port}"' in server.config.read_text().splitlines()
    assert server.monitor_urls == [f"http://127.0.0.1:{server.monitor_port}"]
