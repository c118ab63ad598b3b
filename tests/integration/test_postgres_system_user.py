"""The system user PostgreSQL runs as when the tests (or `potluck up`) run as root: made by the
first server that finds it missing, whichever of several started at once that is (each pytest
worker starts its own). The real `useradd` on this machine, with a user name of the test's own,
removed afterwards."""

import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from potluck.localstack.postgres_server import ensure_system_user

STARTED_AT_ONCE = 6


@pytest.fixture
def new_user_name() -> Iterator[str]:
    assert os.geteuid() == 0, "the suite runs as root (ops/test), as CI does: a user is made only then"
    name = f"potluck-t{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_servers_started_at_once_all_get_the_one_user_the_first_made(new_user_name: str) -> None:
    """Tried: six servers' set-ups at the same moment, the user missing. Must hold: each gets
    the user's name, no error (useradd refuses all but one), and the machine has the user once,
    a system user without a login shell."""
    with ThreadPoolExecutor(STARTED_AT_ONCE) as pool:
        names = list(pool.map(lambda _: ensure_system_user(new_user_name), range(STARTED_AT_ONCE)))

    assert names == [new_user_name] * STARTED_AT_ONCE
    entry = pwd.getpwnam(new_user_name)
    assert entry.pw_uid < 1000, entry
    assert entry.pw_shell == "/usr/sbin/nologin"
    with open("/etc/passwd") as users:
        assert [line.split(":")[0] for line in users].count(new_user_name) == 1
