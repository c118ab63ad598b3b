"""Every test runs against real servers that the fixtures start (see tests/fixtures)."""

from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.tracing",
    "tests.fixtures.docker",
    "tests.fixtures.pool",
    "tests.fixtures.nats_cluster",
    "tests.fixtures.ssh",
    "tests.fixtures.solo",
    "tests.fixtures.web_app",
]


@pytest.fixture(autouse=True, scope="session")
def no_pool_of_the_developers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Operator commands take a running `potluck up` pool's settings when given none: a pool the
    developer runs in ~/.potluck must never become the one a test's command acts on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POTLUCK_HOME", str(tmp_path_factory.mktemp("potluck-home")))
        yield
