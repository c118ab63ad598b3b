"""Image references and allowed_images patterns: parsed part by part, matched part by part."""

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.image_reference import (
    ImageReference,
    InvalidReference,
    image_allowed,
    parse_pattern,
    parse_reference,
)
from potluck.hostd.config import ConfigError, load_config

DIGEST = "sha256:" + "0123456789abcdef" * 4

alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
separators = st.sampled_from([".", "_", "__", "-", "--"])
path_components = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    alnum,
    st.lists(st.tuples(separators, alnum), max_size=2),
)
domain_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?", fullmatch=True)
registries = st.one_of(
    st.none(),
    st.builds(
        lambda labels, port: ".".join(labels) + (f":{port}" if port is not None else ""),
        st.lists(domain_labels, min_size=2, max_size=3),
        st.none() | st.integers(1, 65535),
    ),
    st.builds(lambda port: f"localhost:{port}", st.integers(1, 65535)),
)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
digests = st.builds(lambda h: "sha256:" + h, st.text("0123456789abcdef", min_size=64, max_size=64))


@st.composite
def references(draw: st.DrawFn) -> tuple[str, ImageReference]:
    """A reference as a user writes it, and the parts Docker normalises it to."""
    registry = draw(registries)
    path = "/".join(draw(st.lists(path_components, min_size=1, max_size=3)))
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    if registry is None and "/" in path and "." in path.split("/")[0]:
        registry = "docker.io"  # written without it, the first component would be read as a registry
    text = (f"{registry}/" if registry else "") + path
    text += (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    hub = registry in (None, "docker.io")
    normal_path = f"library/{path}" if hub and "/" not in path else path
    normal_tag = "latest" if tag is None and digest is None else tag
    return text, ImageReference(registry or "docker.io", normal_path, normal_tag, digest)


@given(references())
def test_a_reference_parses_into_its_normalised_parts(case: tuple[str, ImageReference]) -> None:
    text, parts = case
    assert parse_reference(text) == parts
    assert parse_reference(str(parts)) == parts


@given(references())
def test_a_reference_written_as_a_pattern_admits_itself(case: tuple[str, ImageReference]) -> None:
    text, _ = case
    assert image_allowed([text], text)


@given(references(), references())
def test_a_tag_wildcard_admits_every_tag_of_that_repository_and_nothing_else(
    mine: tuple[str, ImageReference], other: tuple[str, ImageReference]
) -> None:
    """`<registry>/<repository>:*` admits a reference exactly when registry and repository are
    the same and it has a tag: `*` spans no '/', ':' or '@' into the other parts."""
    pattern = f"{mine[1].registry}/{mine[1].repository}:*"
    got = other[1]
    expected = (got.registry, got.repository) == (
        mine[1].registry,
        mine[1].repository,
    ) and got.tag is not None
    assert image_allowed([pattern], other[0]) is expected


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_with_invalid_reference(text: str) -> None:
    for parse in (parse_reference, parse_pattern):
        with contextlib.suppress(InvalidReference):
            parse(text)


@given(st.lists(st.text(max_size=30), max_size=3), st.text(max_size=60))
def test_matching_never_raises(patterns: list[str], image: str) -> None:
    assert image_allowed(patterns, image) in (True, False)


@pytest.mark.parametrize(
    ("pattern", "image", "allowed"),
    [
        # The issue: fnmatch let `*` run through ':' and '/' into a registry of the user's choosing.
        ("debian:*", "debian:5000/evil/img:1", False),
        ("debian:*", "debian:12", True),
        ("debian:*", "docker.io/library/debian:bookworm-slim", True),
        ("debian:*", "index.docker.io/library/debian:12", True),
        ("debian:*", "debian/evil:12", False),
        ("debian:*", f"debian@{DIGEST}", False),
        ("debian:*", f"debian:12@{DIGEST}", True),
        ("debian", "debian", True),
        ("debian", "debian:12", False),
        ("debian@sha256:*", f"debian@{DIGEST}", True),
        (f"debian@{DIGEST}", "debian:latest", False),
        ("registry.example.org/acme/*:*", "registry.example.org/acme/tool:1", True),
        ("registry.example.org/acme/*:*", "registry.example.org/acme/tool/sub:1", False),
        ("registry.example.org/acme/*:*", "registry.example.org.evil/acme/tool:1", False),
        ("*.acme.dev/app:v?", "eu.acme.dev/app:v1", True),
        ("*.acme.dev/app:v?", "acme.dev/app:v1", False),
        ("*.acme.dev/app:v?", "eu.acme.dev/app:v10", False),
        ("localhost:5000/x:*", "localhost:5000/x:y", True),
        ("localhost:5000/x:*", "localhost:5001/x:y", False),
        ("potluck-test:*", "potluck-test:latest", True),
        ("debian:*", "Debian:12", False),  # not a valid reference: admits nothing
    ],
)
def test_patterns_by_example(pattern: str, image: str, allowed: bool) -> None:
    assert image_allowed([pattern], image) is allowed


def test_no_patterns_admit_any_image() -> None:
    assert image_allowed([], "anything.example/at/all:1")


@pytest.mark.parametrize(
    ("text", "named"),
    [("", "empty"), ("Debian", "'Debian'"), ("debian:a b", "tag"), ("debian@@x", "digest"), ("a@", "digest")],
)
def test_invalid_references_say_which_part_is_wrong(text: str, named: str) -> None:
    with pytest.raises(InvalidReference, match=named):
        parse_reference(text)


def test_hostd_refuses_a_config_with_an_invalid_pattern_naming_it(tmp_path: Path) -> None:
    """A pattern that cannot mean an image stops hostd at start, naming the field and the entry."""
    config = tmp_path / "hostd.toml"
    config.write_text(
        'host_id = "h-3f2a9c1e7b40"\ncredentials_file = "c"\nstate_dir = "s"\n'
        'allowed_images = ["debian:*", "Bad Image"]\n[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n'
    )
    with pytest.raises(ConfigError, match=r"allowed_images: .*entry 1: pattern 'Bad Image'"):
        load_config(config)
    config.write_text(
        config.read_text().replace(', "Bad Image"', "").replace("[donate]", "allow_network = true\n[donate]")
    )
    loaded = load_config(config)
    assert loaded.allow_network
    assert not loaded.internal_network
    assert loaded.image_allowed("debian:12")
    assert not loaded.image_allowed("debian:5000/evil/img:1")


def test_a_name_as_long_as_the_api_admits_parses_though_library_makes_it_longer() -> None:
    """Hypothesis found it: 250 characters written, 258 once `library/` is added. The API
    bounds what is written, so the parser does too, and placement never meets an unreadable name."""
    name = "a" * 250
    assert parse_reference(name).repository == f"library/{name}"
    with pytest.raises(InvalidReference):
        parse_reference("a" * 256)
