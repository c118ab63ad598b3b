"""hostd's image cache, the parts without an engine: what to remove, and the config's checks."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from potluck.hostd.config import HostdConfig
from potluck.hostd.docker_driver import EngineImage
from potluck.hostd.image_inventory import evictions

MiB = 1 << 20


def image(n: int, size: int = MiB, *, containers: int = 0, tag: str | None = None) -> EngineImage:
    return EngineImage(
        image_id=f"sha256:{n:064x}",
        tags=(tag or f"img{n}:1",),
        digests=(),
        size=size,
        created=n,
        containers=containers,
    )


def test_the_least_recently_used_go_first_until_the_rest_fit() -> None:
    images = [image(n) for n in range(10)]
    chosen = evictions(images, lambda i: float(i.created), cap=4 * MiB, protected=set(), now=100, idle_s=0)
    assert [i.image_id for i in chosen] == [i.image_id for i in images[:6]]


def test_in_use_protected_and_recent_images_are_never_chosen() -> None:
    images = [
        image(0, containers=1),
        image(1, tag="debian:12"),
        image(2),  # used at 95: within the idle time
        image(3),
        image(4),
    ]
    used = {images[2].image_id: 95.0}
    chosen = evictions(
        images,
        lambda i: used.get(i.image_id, float(i.created)),
        cap=0,
        protected={"docker.io/library/debian:12"},
        now=100,
        idle_s=10,
    )
    assert [i.image_id for i in chosen] == [images[3].image_id, images[4].image_id]


def test_nothing_is_removed_within_the_cap() -> None:
    assert evictions([image(1), image(2)], lambda i: 0.0, cap=2 * MiB, protected=set(), now=9, idle_s=0) == []


def config(**extra: object) -> HostdConfig:
    return HostdConfig.model_validate(
        {
            "host_id": "h-1",
            "credentials_file": Path("/nonexistent"),
            "state_dir": Path("/nonexistent"),
            "donate": {"cpus": 1, "memory": "1G", "disk": "10G"},
            **extra,
        }
    )


def test_image_cache_is_carved_out_of_the_donated_disk() -> None:
    c = config(image_cache="4G", allowed_images=["potluck-test:latest", "debian:*"])
    assert c.image_cache == 4 << 30
    assert c.placeable().disk_bytes == 6 << 30
    assert c.placeable().cpus == 1
    assert c.base_images() == ["potluck-test:latest"]
    assert config().placeable() == config().donate.capacity()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("10G", "must be smaller than donate.disk"),
        ("11G", "must be smaller"),
        ("lots", "image_cache"),
        (0, ""),
    ],
)
def test_a_bad_image_cache_is_refused_naming_it(value: object, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(image_cache=value)
    assert "image_cache" in str(caught.value)
    assert says in str(caught.value)
