"""`potluck cp`'s reading of its arguments (potluck/user/copy.py); downloads: test_copy_downloads.py."""

from pathlib import Path

import click
import pytest

from potluck.user.copy import Local, Remote, parse_endpoint


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("a1b2:/data", Remote("a1b2", "/data")),
        ("a1b2:rel/path", Remote("a1b2", "rel/path")),
        ("data.csv", Local(Path("data.csv"))),
        ("/abs/with:colon", Local(Path("/abs/with:colon"))),
        ("./a1b2:/data", Local(Path("./a1b2:/data"))),
        ("not an id:/x", Local(Path("not an id:/x"))),
    ],
)
def test_alloc_colon_path_is_remote_and_anything_else_local(argument: str, expected: object) -> None:
    """ALLOC:PATH names a path in an allocation; a path starting with / or ., or whose part
    before the colon cannot be an id, is a local path (as docker cp reads them)."""
    assert parse_endpoint(argument) == expected


def test_an_alloc_without_a_path_is_a_usage_error() -> None:
    """`ALLOC:` alone says which allocation but not where: a clear error naming the argument."""
    with pytest.raises(click.BadParameter, match="a1b2:"):
        parse_endpoint("a1b2:")


def test_a_dash_is_refused_not_taken_for_a_file_called_dash() -> None:
    """What is tried: `-` as either side, which docker cp reads as a tar stream on stdin or
    stdout. Before, it was a local path: `potluck cp ALLOC:/out -` wrote a file called `-` in the
    working directory and exited 0. What must hold: a usage error saying `-` is not supported
    and how to name a file called -; `./-` is that file."""
    with pytest.raises(click.BadParameter, match=r"not supported.*`\./-`"):
        parse_endpoint("-")
    assert parse_endpoint("./-") == Local(Path("./-"))
