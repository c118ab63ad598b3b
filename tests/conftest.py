"""Every test runs against real servers that the fixtures start (see tests/fixtures)."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.tracing",
    "tests.fixtures.docker",
    "tests.fixtures.pool",
    "tests.fixtures.nats_cluster",
    "tests.fixtures.ssh",
    "tests.fixtures.solo",
]
