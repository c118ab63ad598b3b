"""The bounds Potluck gives every NATS client connection are the same wherever its servers are
configured: the configurations localstack generates (tests, `potluck up`) and ops/nats/*.conf
(docker-compose.yml's single server and cluster nodes)."""

from pathlib import Path

import pytest

from potluck.localstack.nats_server import NATS_CLIENT_LIMITS

OPS_NATS = Path(__file__).resolve().parents[2] / "ops" / "nats"


@pytest.mark.parametrize("name", ["nats-server.conf", "cluster.conf"])
def test_ops_configurations_carry_the_client_limits(name: str) -> None:
    """Tried: reading each compose configuration. Must hold: every line of NATS_CLIENT_LIMITS is
    in it, before the users file is included, so a compose pool is bounded as a local one is."""
    lines = (OPS_NATS / name).read_text().splitlines()
    include = lines.index('include "auth.json"')
    for limit in NATS_CLIENT_LIMITS.splitlines():
        assert limit in lines[:include], f"{name} lacks {limit!r}"
