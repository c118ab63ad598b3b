"""The session's first Docker engine, for a `potluck up` whose engine is not what its test tries.

`potluck up` takes the engine DOCKER_HOST names when it answers; with none, it starts a private
one in its state directory and loads the default image into it (300 MB) before anything else:
about ten seconds of each test that runs `up`. Most of those tests try something else (a
restored log, a password, a hostd or an allocator that stops, ports kept across starts, a
member joining): they give `up` the session's engine, which already holds the default image
and the test image, through DOCKER_HOST. The README's newcomer path
(test_newcomer.py::test_up_then_the_user_quick_start_then_down) and the tests that interrupt
`up` while its own engine starts keep the private engine: that start is part of what they try.

The engine is shared with the session's other tests, so each test leaves it as it found it:
the same containers, images (by id and name), networks and volumes, checked after the test.
A module takes the fixture in its own namespace:

    shared_engine = shared_engine_fixtures.shared_engine
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from potluck.localstack.docker_engine import DockerEngine, engine_request

__all__ = ["engine_contents", "shared_engine"]


def _listed(url: str, path: str) -> Any:
    status, body = engine_request(url, "GET", path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def engine_contents(url: str) -> dict[str, list[Any]]:
    """What a test could leave behind on the engine at `url`, comparable before and after."""
    return {
        "containers": sorted(c["Id"] for c in _listed(url, "/containers/json?all=1")),
        "images": sorted((i["Id"], sorted(i.get("RepoTags") or [])) for i in _listed(url, "/images/json")),
        "networks": sorted(n["Name"] for n in _listed(url, "/networks")),
        "volumes": sorted(v["Name"] for v in _listed(url, "/volumes").get("Volumes") or []),
    }


@pytest.fixture
def shared_engine(docker_engines: list[DockerEngine], default_image: str) -> Iterator[dict[str, str]]:
    """DOCKER_HOST naming the session's first engine (it holds the default image and the test
    image, as `up` would load them); after the test, the engine holds what it held before."""
    engine = docker_engines[0]
    before = engine_contents(engine.url)
    yield {"DOCKER_HOST": engine.url}
    after = engine_contents(engine.url)
    if after != before:  # leave the session's engine usable whatever went wrong, then say it
        kept = set(before["containers"])
        for container in after["containers"]:
            if container not in kept:
                engine_request(engine.url, "DELETE", f"/containers/{container}?force=1&v=1")
    assert after == before, "the test left the shared engine changed"
