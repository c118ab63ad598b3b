"""How `potluck ops backup` and `ops restore` hand a database URL to pg_dump and pg_restore."""

import pytest

from potluck.ops.backup import libpq_target


@pytest.mark.parametrize(
    ("url", "target", "password"),
    [
        ("postgresql://potluck@127.0.0.1:5432/potluck", "postgresql://potluck@127.0.0.1:5432/potluck", None),
        ("postgresql://potluck:hunter2@db:5432/potluck", "postgresql://potluck@db:5432/potluck", "hunter2"),
        (
            "postgresql://u:p%40ss%3Aw@db/potluck?sslmode=require",
            "postgresql://u@db/potluck?sslmode=require",
            "p@ss:w",
        ),
        ("postgresql://u:pw@[::1]:5432/potluck", "postgresql://u@[::1]:5432/potluck", "pw"),
    ],
)
def test_the_password_leaves_the_url_for_pgpassword(url: str, target: str, password: str | None) -> None:
    """Tried: URLs without a password, with one, with a percent-encoded one and a query, and
    with an IPv6 host. Must hold: the URL given on the tools' command line (which `ps` shows
    every user) has no password and is otherwise the same; the password, decoded, is in the
    environment's PGPASSWORD alone."""
    given, env = libpq_target(url)
    assert given == target
    assert env == ({} if password is None else {"PGPASSWORD": password})
