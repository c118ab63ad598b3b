"""Which images a host holds: hostd's report, the allocator's fact, and how a request's image
is matched against them (streams `images-<host_id>`).

hostd names each image it holds by every normalised reference the engine knows
for it: `registry/repository:tag` for each tag and `registry/repository@digest`
for each digest (see potluck.contracts.image_reference). The allocator logs
`HostImagesReported` only when the set changed, in a stream of its own per host
so that a busy host's image churn never moves the version of `host-<id>`.

The event has no routing field: it is the allocator's to fold, and no hostd
consumer (which filters on subjects ending in its host id) receives it.
"""

from collections.abc import Iterable

from pydantic import Field

from potluck.contracts.image_reference import InvalidReference, parse_reference
from potluck.events import Event, event_type

#: At most this many names, of at most this many characters together, per report (and per
#: host in the allocator's model): a member's engine full of images must not make one message
#: or one event unbounded, and a report must fit the reports stream's 64 KiB messages.
MAX_IMAGES_HELD = 500
MAX_IMAGES_HELD_CHARS = 48 * 1024


def images_stream(host_id: str) -> str:
    return f"images-{host_id}"


@event_type
class HostImagesReported(Event):
    """The host now holds exactly these images (normalised names, sorted)."""

    host_id: str
    images: list[str] = Field(default_factory=list, max_length=MAX_IMAGES_HELD)


def held_names(tags: Iterable[str], digests: Iterable[str]) -> set[str]:
    """The normalised names of one engine image from its RepoTags and RepoDigests; names the
    engine keeps that are not references (`<none>:<none>`) are left out."""
    names: set[str] = set()
    for text in (*tags, *digests):
        try:
            names.add(str(parse_reference(text)))
        except InvalidReference:
            continue
    return names


def bounded(names: Iterable[str]) -> list[str]:
    """The names a report carries: tags before digests (users ask by tag far more often), each
    group sorted, cut at MAX_IMAGES_HELD names or MAX_IMAGES_HELD_CHARS characters."""
    kept: list[str] = []
    chars = 0
    for name in sorted(set(names), key=lambda n: ("@" in n, n)):
        chars += len(name) + 3  # quotes and a comma in the JSON
        if len(kept) == MAX_IMAGES_HELD or chars > MAX_IMAGES_HELD_CHARS:
            break
        kept.append(name)
    return sorted(kept)


def image_keys(image: str) -> tuple[str, ...]:
    """The names under which a host holding `image` lists it: its normalised reference, and,
    when it is pinned to a digest, `registry/repository@digest` (what RepoDigests says). An
    image that is not a valid reference has none."""
    try:
        ref = parse_reference(image)
    except InvalidReference:
        return ()
    keys = [str(ref)]
    if ref.digest is not None and ref.tag is not None:
        keys.append(f"{ref.registry}/{ref.repository}@{ref.digest}")
    return tuple(keys)


def holds_image(held: frozenset[str] | set[str], image: str | None) -> bool:
    return image is not None and any(key in held for key in image_keys(image))
