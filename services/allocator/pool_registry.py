"""The allocator's side of the pool registry: where it is, and what a user keeps there.

Listing asks the registry itself (its catalog and tag lists) with a token the
allocator signs for the purpose, so what `potluck image ls` shows is what a
host would pull, not a copy that could drift.
"""

from dataclasses import dataclass
from urllib.parse import urlencode, urlparse

import aiohttp
import structlog

from potluck.allocator.registry_access import LIBRARY, Scope, grant_for_user, in_library, namespace_of
from potluck.allocator.registry_tokens import TokenIssuer
from potluck.contracts.image_reference import InvalidReference, parse_reference
from potluck.kernel.rejections import Rejected

log = structlog.get_logger(__name__)

CATALOG_PAGE = 1000
MAX_REPOSITORIES = 10_000
TIMEOUT = aiohttp.ClientTimeout(total=15)
#: What a manifest may be, as the engine asks for it (a registry answers 404 for a type not asked).
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


def pool_repository(registry_address: str, image: str) -> str | None:
    """The repository `image` names in the pool registry at `registry_address`, or None when it
    names another registry (or is no reference).

    Read as the engine reads it (potluck.contracts.image_reference): the registry's host in any
    case is the same registry to DNS and to a host's engine, which is handed the normalised
    name, so `POOL.example.org:5050/alice/x` is alice's repository as much as
    `pool.example.org:5050/alice/x` is."""
    try:
        reference = parse_reference(image)
    except InvalidReference:
        return None
    if reference.registry != registry_address.lower():
        return None
    return reference.repository


@dataclass(frozen=True)
class ImageRepository:
    name: str
    tags: list[str]


@dataclass(frozen=True)
class PoolRegistry:
    """`address` as image references write it (`127.0.0.1:5000`); `tokens` signs access."""

    address: str
    tokens: TokenIssuer

    def reference_prefix(self, user: str) -> str:
        namespace = namespace_of(user)
        if namespace is None:
            raise Rejected(
                "NO_NAMESPACE",
                f"the user name {user!r} cannot name a registry namespace; ask an operator for another",
                status=409,
            )
        return f"{self.address}/{namespace}/"

    def check_image(self, user: str, image: str) -> None:
        """Refuse `image` when it names another user's namespace of this registry.

        Images from elsewhere are the hosts' business (their allow-lists); in the pool
        registry each namespace is its owner's alone, to pull as much as to push, except the
        pool's library, which every user may run. The image is read as a reference, as the
        host's engine reads it, never compared as text.
        """
        repository = pool_repository(self.address, image)
        if repository is None or in_library(repository):
            return
        self.reference_prefix(user)  # a user with no namespace is told so
        if "pull" not in grant_for_user(user, Scope("repository", repository, frozenset({"pull"}))).actions:
            raise Rejected(
                "IMAGE_FORBIDDEN",
                f"{image[:200]} is in another user's namespace of the pool registry; "
                f"yours is {self.reference_prefix(user)}",
                field="image",
                status=403,
            )

    async def repositories_of(self, user: str) -> list[ImageRepository]:
        return await self._repositories(self.reference_prefix(user).removeprefix(self.address + "/"))

    async def library(self) -> list[ImageRepository]:
        """The pool's own images, which every user may run, named as `--image` takes them: NAME
        (`library/NAME` in the registry)."""
        found = await self._repositories(LIBRARY + "/")
        return [ImageRepository(r.name.removeprefix(LIBRARY + "/"), r.tags) for r in found]

    async def _repositories(self, prefix: str) -> list[ImageRepository]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            try:
                names = await self._catalog(http, prefix)
                return [ImageRepository(name, await self._tags(http, name)) for name in sorted(names)]
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._unavailable(exc) from None

    async def holds(self, repository: str, tag: str) -> bool:
        """Does the registry have `repository:tag`? Rejected (503) when it does not answer: the
        caller must not take a registry that is down for one that lacks the image."""
        headers = self._headers(Scope("repository", repository, frozenset({"pull"})))
        headers["Accept"] = ", ".join(MANIFEST_TYPES)
        url = f"http://{self.address}/v2/{repository}/manifests/{tag}"
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            try:
                async with http.head(url, headers=headers) as response:
                    if response.status == 404:
                        return False
                    response.raise_for_status()
                    return True
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> Rejected:
        log.warning("pool_registry.unreachable", address=self.address, error=str(exc))
        # The host (and the user, in a failure's detail) reads what happened, not aiohttp's text
        # (its URLs, its socket errors): that is in the allocator's log, logged just above.
        what = f"answered {exc.status}" if isinstance(exc, aiohttp.ClientResponseError) else "does not answer"
        return Rejected(
            "REGISTRY_UNAVAILABLE",
            f"the pool registry at {self.address} {what}; try again, or tell the operator",
            status=503,
        )

    def _headers(self, scope: Scope) -> dict[str, str]:
        issued = self.tokens.issue("potluck-allocator", [scope])
        return {"Authorization": f"Bearer {issued.token}"}

    async def _catalog(self, http: aiohttp.ClientSession, prefix: str) -> list[str]:
        """The repositories whose names start with `prefix` (`alice/`), at most MAX_REPOSITORIES.

        The catalog is read from the prefix on (`last=`), not from its start: Distribution
        lists names in order, `/` sorting before any other character, so a namespace's names
        come together, right after its prefix. Read from the start, a listing cost every
        page of everybody's repositories before, and a user whose names came after the
        first MAX_REPOSITORIES of the pool's was shown none of them."""
        names: list[str] = []
        query = urlencode({"n": CATALOG_PAGE, "last": prefix})
        url: str | None = f"http://{self.address}/v2/_catalog?{query}"
        headers = self._headers(Scope("registry", "catalog", frozenset({"*"})))
        while url is not None and len(names) < MAX_REPOSITORIES:
            async with http.get(url, headers=headers) as response:
                response.raise_for_status()
                page = (await response.json()).get("repositories") or []
                own = [name for name in page if name.startswith(prefix)]
                names += own
                if len(own) < len(page):  # past the namespace: no later page holds any of it
                    break
                url = _next_page(self.address, response.headers.get("Link"))
        return names[:MAX_REPOSITORIES]

    async def _tags(self, http: aiohttp.ClientSession, name: str) -> list[str]:
        headers = self._headers(Scope("repository", name, frozenset({"pull"})))
        async with http.get(f"http://{self.address}/v2/{name}/tags/list", headers=headers) as response:
            if response.status == 404:  # every tag deleted since the catalog was read
                return []
            response.raise_for_status()
            return sorted((await response.json()).get("tags") or [])


def _next_page(address: str, link: str | None) -> str | None:
    """The registry's `Link: </v2/_catalog?last=x&n=1000>; rel="next"`, on the same registry only."""
    if not link or 'rel="next"' not in link:
        return None
    target = link.split(";", 1)[0].strip().lstrip("<").rstrip(">")
    parsed = urlparse(target)
    if parsed.netloc and parsed.netloc != address:
        return None
    return f"http://{address}{parsed.path}?{parsed.query}"
