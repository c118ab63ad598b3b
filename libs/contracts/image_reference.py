"""What an image name and an `allowed_images` pattern mean, part by part.

A reference is `[registry/]repository[:tag][@digest]`, with the grammar of
distribution's `reference` package (what `docker pull` accepts), normalised
the way Docker does it: no registry means `docker.io`, a one-part repository
on Docker Hub gets `library/`, and no tag and no digest means `:latest`.
The first part of the name is the registry only when it has a `.` or a `:`,
is `localhost`, or has capitals; so `debian:5000/evil/img:1` names the
registry `debian:5000`, not the repository `debian`.

A pattern is written like a reference and normalised the same way; `*`
(any run of characters) and `?` (one character) match within one part only:
within the registry, within one path component of the repository, within
the tag, within the digest. `*` never spans a `/`, `:` or `@`, so
`debian:*` admits every tag of Docker Hub's `library/debian` and nothing
from another registry or repository. A pattern with a tag matches only
references that have a tag (a digest alone is not a tag); one with a digest
only references pinned to a matching digest; one with neither means
`:latest`, as `docker pull debian` does.

Shared by hostd (which refuses what its member did not allow) and the
allocator's scheduler (which never places an image where it would be
refused). Pure; hand-written because the docker SDK's helpers split only at
the last `:` and would have to be imported outside hostd's driver.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRY = "index.docker.io"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
# In patterns, each part may also hold the wildcards; its shape is checked loosely.
_PATTERN_DOMAIN = re.compile(r"[A-Za-z0-9.:\-\[\]*?]+")
_PATTERN_PATH_COMPONENT = re.compile(r"[a-z0-9._\-*?]+")
_PATTERN_TAG = re.compile(r"[\w.\-*?]{1,128}")
_PATTERN_DIGEST = re.compile(r"[A-Za-z0-9+._\-:*?]+")

#: The whole reference grammar as one pattern, ASCII only and valid both in ECMA 262 and in Python:
#: the API publishes it in its JSON schema, so what the schema admits is what parse_reference reads.
_P_ALNUM = "[a-z0-9]+"
_P_COMPONENT = f"{_P_ALNUM}(?:(?:[._]|__|-+){_P_ALNUM})*"
_P_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# As _split decides: the first part is a registry only if it has a '.' or a port, is
# `localhost`, or has capitals; otherwise it is the repository's first component. (IPv6
# registries are left out of the pattern: no laptop pool names one.)
_P_UPPER_COMPONENT = (
    "(?:[A-Z]|[A-Z][a-zA-Z0-9-]*[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[A-Z]"
    "|[a-zA-Z0-9][a-zA-Z0-9-]*[A-Z][a-zA-Z0-9-]*[a-zA-Z0-9])"
)
_P_HOST = (
    f"(?:{_P_DOMAIN_COMPONENT}(?:(?:\\.{_P_DOMAIN_COMPONENT})+(?::[0-9]+)?|:[0-9]+)"
    f"|localhost|{_P_UPPER_COMPONENT})"
)
_P_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_P_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# A first component followed by '/' and holding a '.' would be read as a registry: none here.
_P_FIRST = f"{_P_ALNUM}(?:(?:_|__|-+){_P_ALNUM})*"
_P_NAME = f"(?:{_P_HOST}/{_P_COMPONENT}(?:/{_P_COMPONENT})*|{_P_FIRST}(?:/{_P_COMPONENT})+|{_P_COMPONENT})"
REFERENCE_PATTERN = f"^{_P_NAME}(?::{_P_TAG})?(?:@{_P_DIGEST})?$"


class InvalidReference(ValueError):
    """Not an image reference (or pattern); the message says which part is wrong."""


@dataclass(frozen=True)
class ImageReference:
    """A normalised reference, or a pattern whose parts may hold `*` and `?`."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _split(text: str, what: str) -> tuple[str, str, str | None, str | None]:
    if not text:
        raise InvalidReference(f"{what} is empty")
    name, at, digest = text.partition("@")
    if at and ("@" in digest or not digest):
        raise InvalidReference(f"{what} {text!r}: a digest follows one '@' and is not empty")
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    registry = registry.lower()
    if registry == _LEGACY_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if tag is None and not at:
        tag = DEFAULT_TAG
    return registry, path, tag, digest if at else None


def _check(
    text: str,
    what: str,
    parts: tuple[str, str, str | None, str | None],
    domain: re.Pattern[str],
    component: re.Pattern[str],
    tag_re: re.Pattern[str],
    digest_re: re.Pattern[str],
) -> ImageReference:
    registry, path, tag, digest = parts
    if not domain.fullmatch(registry):
        raise InvalidReference(f"{what} {text!r}: {registry!r} is not a registry host[:port]")
    for piece in path.split("/"):
        if not component.fullmatch(piece):
            raise InvalidReference(
                f"{what} {text!r}: repository part {piece!r} must be lowercase letters and digits, "
                "separated by '.', '_', '__' or '-'"
            )
    if tag is not None and not tag_re.fullmatch(tag):
        raise InvalidReference(
            f"{what} {text!r}: tag {tag!r} must be up to 128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    if digest is not None and not digest_re.fullmatch(digest):
        raise InvalidReference(f"{what} {text!r}: digest {digest!r} is not algorithm:hex")
    return ImageReference(registry, path, tag, digest)


@lru_cache(maxsize=4096)  # the scheduler asks about the same few names for every host
def parse_reference(text: str) -> ImageReference:
    """The normalised parts of an image reference; InvalidReference if it is not one."""
    # The name as written (before `library/` is added), as the API's length bound sees it:
    # what the API admits must parse here, or placement would meet a name it cannot read.
    written = text.partition("@")[0]
    if written.rfind(":") > written.rfind("/"):
        written = written[: written.rfind(":")]
    if len(written) > NAME_MAX:
        raise InvalidReference(f"image {text[:40]!r}...: the name is longer than {NAME_MAX} characters")
    parts = _split(text, "image")
    return _check(text, "image", parts, _DOMAIN, _PATH_COMPONENT, _TAG, _DIGEST)


def engine_name(text: str) -> str:
    """The name to hand a Docker engine for the image `text`: its whole normalised reference
    (`docker.io/library/busybox:latest` for `busybox`); InvalidReference if it is none.

    An engine reads a name it holds no image by as an image id (`sha256:<hex>`, 64 hex digits)
    or as the first characters of one (`docker run 3f2a`: the one image whose id starts so).
    A registry host and a `/` make the name nothing but a name to it, so an allocation gets
    the image its reference names or none, never another user's or the member's own image
    that happens to have such an id."""
    return str(parse_reference(text))


@dataclass(frozen=True)
class ImagePattern:
    """One `allowed_images` entry, parsed; `matches` compares part by part."""

    text: str
    parts: ImageReference

    def matches(self, image: ImageReference) -> bool:
        p = self.parts
        if not _glob(p.registry).fullmatch(image.registry):
            return False
        wanted, got = p.repository.split("/"), image.repository.split("/")
        if len(wanted) != len(got):
            return False
        if not all(_glob(w).fullmatch(g) for w, g in zip(wanted, got, strict=True)):
            return False
        if p.tag is not None and (image.tag is None or not _glob(p.tag).fullmatch(image.tag)):
            return False
        if p.digest is None:
            return True
        return image.digest is not None and bool(_glob(p.digest).fullmatch(image.digest))


@lru_cache(maxsize=4096)
def parse_pattern(text: str) -> ImagePattern:
    """An `allowed_images` entry; InvalidReference (naming the part) if it cannot mean an image."""
    parts = _split(text, "pattern")
    return ImagePattern(
        text,
        _check(
            text, "pattern", parts, _PATTERN_DOMAIN, _PATTERN_PATH_COMPONENT, _PATTERN_TAG, _PATTERN_DIGEST
        ),
    )


@lru_cache(maxsize=4096)
def _glob(part: str) -> re.Pattern[str]:
    # Parts never hold '/', so '.*' stays inside the part it was written in.
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in part), re.DOTALL
    )


def image_allowed(patterns: "list[str] | tuple[str, ...]", image: str) -> bool:
    """Does some pattern admit `image`? No patterns admit any image; an image that is not a
    valid reference, or a pattern that is not valid, admits nothing."""
    if not patterns:
        return True
    try:
        reference = parse_reference(image)
    except InvalidReference:
        return False
    for text in patterns:
        try:
            pattern = parse_pattern(text)
        except InvalidReference:
            continue
        if pattern.matches(reference):
            return True
    return False
