"""Registry tokens for hosts: a host may pull the image of an allocation placed on it, nothing more.

A host asks on IMAGE_TOKEN (its id ends the subject, which NATS lets only that
host publish on) for the image of one of its allocations. The answer is a
token scoped to pull that one repository of the pool registry, valid for a
few minutes, and only for a repository the allocation's user may pull; the
allocator signs it as it signs users' tokens. Asked for an allocation placed
elsewhere, ended, or an image that is not that allocation's or not in the pool
registry, the allocator refuses, saying why, and the host gets nothing it could
use for another repository.

A Docker Hub name of an official image (`potluck-default:latest`, `python:3.12`)
that the pool's library holds is pulled from there (`library/potluck-default`):
a pool from `potluck up` publishes its default image so, and every laptop can
run it without reaching the internet. A name the library does not hold is
pulled from Docker Hub, anonymously, as before.
"""

import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from potluck.allocator.host_rates import HostRates
from potluck.allocator.pool_registry import PoolRegistry, pool_repository
from potluck.allocator.registry_access import LIBRARY, Scope, grant_for_user
from potluck.contracts.image_reference import DEFAULT_REGISTRY, InvalidReference, parse_reference
from potluck.contracts.messages import ImageToken, ImageTokenRequest, Reply
from potluck.contracts.subjects import host_of, inbox_prefix
from potluck.events.replies import ReplyGuard
from potluck.kernel.rejections import Rejected, first_error, internal_error, new_incident
from potluck.readmodels.allocations import ACTIVE, AllocationsView

__all__ = ["grant_image_token", "image_token_responder", "library_copy", "pool_repository"]

log = structlog.get_logger(__name__)


def library_copy(image: str) -> tuple[str, str] | None:
    """The repository and tag of `image` in the pool's library when it is a Docker Hub official
    name with a tag (`python:3.12` -> `library/python`, `3.12`); None for anything else (another
    registry, a user's repository on Docker Hub, a digest, which a copy's tag could not stand for)."""
    try:
        reference = parse_reference(image)
    except InvalidReference:
        return None
    if reference.registry != DEFAULT_REGISTRY or reference.digest is not None or reference.tag is None:
        return None
    if not reference.repository.startswith(LIBRARY + "/") or reference.repository.count("/") != 1:
        return None
    return reference.repository, reference.tag


def grant_image_token(
    allocations: AllocationsView,
    registry: PoolRegistry | None,
    host_id: str,
    request: ImageTokenRequest,
    *,
    library_holds: bool = False,
) -> ImageToken:
    """The token `host_id` gets for `request`, or Rejected saying why it gets none.

    `library_holds`: the pool's library has the copy `library_copy` names (asked of the registry
    by the caller, after this said NOT_IN_POOL_REGISTRY)."""
    if registry is None:
        raise Rejected("NO_POOL_REGISTRY", "this pool runs no image registry", status=404)
    state = allocations.allocations.get(request.alloc_id)
    if state is None or state.host_id != host_id:
        raise Rejected(
            "NOT_YOUR_ALLOCATION",
            f"allocation {request.alloc_id[:64]} is not placed on host {host_id}",
            field="alloc_id",
            status=403,
        )
    if state.status not in ACTIVE:
        raise Rejected(
            "NOT_ACTIVE",
            f"allocation {request.alloc_id[:64]} is {state.status}; it needs no image any more",
            field="alloc_id",
        )
    if request.image != state.spec.image:
        raise Rejected(
            "NOT_ITS_IMAGE",
            f"allocation {request.alloc_id[:64]} runs {state.spec.image}, not {request.image[:200]}",
            field="image",
            status=403,
        )
    repository = pool_repository(registry.address, request.image)
    reference: str | None = None
    copy = library_copy(request.image) if library_holds else None
    if repository is None and copy is not None:
        repository = copy[0]
        reference = f"{registry.address}/{copy[0]}:{copy[1]}"
    if repository is None:
        raise Rejected(
            "NOT_IN_POOL_REGISTRY",
            f"{request.image[:200]} is not in the pool registry {registry.address}; pull it from its own "
            "registry",
            field="image",
            status=404,
        )
    pull = Scope("repository", repository, frozenset({"pull"}))
    if "pull" not in grant_for_user(state.user, pull).actions:
        # The API refuses such an image when the allocation is asked for; one that got past it
        # (asked of an allocator running without the registry's address, or before the address
        # changed) still buys its host no more than its user could pull.
        raise Rejected(
            "NOT_ITS_USERS",
            f"allocation {request.alloc_id[:64]} of {state.user} names {repository}, which "
            f"{state.user} may not pull",
            field="image",
            status=403,
        )
    issued = registry.tokens.issue(f"host:{host_id}", [pull])
    return ImageToken(
        registry=registry.address,
        repository=repository,
        token=issued.token,
        expires_in=issued.expires_in,
        reference=reference,
    )


def image_token_responder(
    allocations: Callable[[], AllocationsView],
    registry: PoolRegistry | None,
    guard: ReplyGuard,
    catch_up: Callable[[], Awaitable[None]] | None = None,
    *,
    rates: HostRates | None = None,
) -> Callable[[Msg], Awaitable[None]]:
    """The NATS callback answering IMAGE_TOKEN requests, only into the asking host's own inbox.

    `catch_up` waits (briefly) until the read model holds what the log holds: a host learns of
    its placement from the log, and may ask before this replica's read model has folded it."""

    async def decide(host_id: str, request: ImageTokenRequest) -> ImageToken:
        try:
            return grant_image_token(allocations(), registry, host_id, request)
        except Rejected as exc:
            copy = library_copy(request.image)
            if exc.code != "NOT_IN_POOL_REGISTRY" or registry is None or copy is None:
                raise
            if not await registry.holds(*copy):
                raise
        return grant_image_token(allocations(), registry, host_id, request, library_holds=True)

    async def grant(host_id: str, request: ImageTokenRequest) -> ImageToken:
        try:
            return await decide(host_id, request)
        except Rejected as exc:
            if exc.code != "NOT_YOUR_ALLOCATION" or catch_up is None:
                raise
        with contextlib.suppress(TimeoutError):
            await catch_up()
        return await decide(host_id, request)

    async def respond(msg: Msg) -> None:
        host_id = host_of(msg.subject)
        if rates is not None and not await rates.admit(msg):
            return
        if not guard.allows(msg, inbox_prefix(host_id), requester=host_id):
            return
        try:
            request = ImageTokenRequest.model_validate_json(msg.data)
            token = await grant(host_id, request)
        except ValidationError as exc:
            # The first bad field and why: pydantic's whole text quotes the input back.
            reply = Reply(ok=False, error={"code": "BAD_REQUEST", "message": first_error(exc)})
        except Rejected as exc:
            # Not in the pool registry: routine, the host pulls it from its own registry.
            routine = exc.code in ("NOT_IN_POOL_REGISTRY", "NO_POOL_REGISTRY")
            (log.info if routine else log.warning)(
                "allocator.image_token_refused", host_id=host_id, code=exc.code, detail=exc.message
            )
            reply = Reply(ok=False, error=exc.as_dict())
        except Exception:
            # The pool registry or the fold failed: the host hears INTERNAL and an incident id
            # at once (not a timeout), the operator's log has why.
            incident = new_incident()
            log.exception("allocator.image_token_failed", host_id=host_id, incident=incident)
            reply = Reply(ok=False, error=internal_error("allocator", incident))
        else:
            log.info(
                "allocator.image_token_issued",
                host_id=host_id,
                alloc_id=request.alloc_id,
                repository=token.repository,
            )
            reply = Reply(ok=True, data=token.model_dump(mode="json"))
        await msg.respond(reply.model_dump_json().encode())

    return respond
