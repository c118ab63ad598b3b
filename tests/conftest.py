"""Every test runs against real servers that the fixtures start (see tests/fixtures)."""

from collections.abc import Iterator

import pytest
from hypothesis import settings

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

# No deadline per example: Hypothesis' default of 200 ms is a timed assertion, which a test
# sharing two cores with servers and other tests failed (test_fold, 317 ms) with nothing wrong.
# Speed is measured in bench/; a property that hangs still meets pytest's own timeout.
settings.register_profile("potluck", deadline=None)
settings.load_profile("potluck")


@pytest.fixture(autouse=True, scope="session")
def no_pool_of_the_developers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Operator commands take a running `potluck up` pool's settings when given none: a pool the
    developer runs in ~/.potluck must never become the one a test's command acts on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POTLUCK_HOME", str(tmp_path_factory.mktemp("potluck-home")))
        yield
