"""Where `potluck image push SOURCE` puts SOURCE in the pool registry (potluck/user/images.py)."""

import pytest

from potluck.user.client import ClientError, ExitCode
from potluck.user.images import target_reference

PREFIX = "127.0.0.1:5050/demo/"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("my-sim:1", "127.0.0.1:5050/demo/my-sim:1"),
        ("my-sim", "127.0.0.1:5050/demo/my-sim:latest"),
        ("registry.example.org/team/sim:2", "127.0.0.1:5050/demo/sim:2"),
        ("localhost:5000/sim", "127.0.0.1:5050/demo/sim:latest"),
        # Already in the user's namespace: kept as named, nested paths too.
        ("127.0.0.1:5050/demo/my-sim:1", "127.0.0.1:5050/demo/my-sim:1"),
        ("127.0.0.1:5050/demo/team/sim:3", "127.0.0.1:5050/demo/team/sim:3"),
        ("127.0.0.1:5050/demo/sim", "127.0.0.1:5050/demo/sim:latest"),
    ],
)
def test_an_image_goes_into_the_users_namespace(source: str, target: str) -> None:
    """Tried: images named locally, after another registry, or already in the user's namespace.
    Must hold: each goes under the user's prefix, with `latest` when untagged; one already there
    keeps its whole name (it lost its nested path before)."""
    assert target_reference(PREFIX, source) == target


@pytest.mark.parametrize(
    "source", ["127.0.0.1:5050/bob/my-sim:1", "127.0.0.1:5050/library/python:3", "127.0.0.1:5050/demox/a:1"]
)
def test_another_namespace_of_the_pool_registry_is_refused(source: str) -> None:
    """Tried: an image tagged for another user's namespace, the library, or a namespace whose name
    only begins like the user's.
    Must hold: refused as a usage error naming the user's namespace and the tag that puts it there
    (before, it was pushed into the user's own namespace under its last part, over their image
    of that name, while the README says another user's namespace is refused)."""
    with pytest.raises(ClientError) as refused:
        target_reference(PREFIX, source)
    assert refused.value.code == ExitCode.USAGE
    assert f"than yours ({PREFIX})" in str(refused.value)
    assert f"`docker tag {source} 127.0.0.1:5050/demo/" in str(refused.value)
