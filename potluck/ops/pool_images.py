"""`potluck ops images publish`: an image for the whole pool, in the pool registry's library.

Users' images live in their own namespaces of the pool registry. The pool's own images (the
default image of a pool from `potluck up`, a course's common environment) are published by the
operator under `library/`, Docker Hub's convention for official images: an allocation that asks
for `potluck-default:latest` on a host whose engine lacks it is pulled from
`<registry>/library/potluck-default:latest` and tagged with the name asked for, so every member's
machine can run it without reaching the internet (services/allocator/image_tokens.py decides).
Every user may pull the library; only the holder of the registry's signing key writes to it.

The push goes from the operator's Docker engine with a token this command signs itself with the
key the allocator signs with, so it needs no user and no running allocator.
"""

import contextlib
import sys
from pathlib import Path

import click
import docker
import docker.errors

from potluck.allocator.image_tokens import library_copy
from potluck.allocator.registry_access import Scope
from potluck.allocator.registry_tokens import TokenIssuer
from potluck.cli_options import up_state_dir_option
from potluck.kernel.signing_keys import KEY_FILE, SigningKeyError, load_signing_key
from potluck.user.client import ClientError, ExitCode
from potluck.user.images import push_with_progress

__all__ = ["images", "library_reference", "publish_image"]


class PublishFailed(Exception):
    """The image could not be published; the message says why and what to do."""


def library_reference(registry_address: str, image: str) -> str:
    """Where `image` goes in the library (`python:3.12` -> `<registry>/library/python:3.12`).

    Only a Docker Hub official name with a tag can stand for a library image: that is the form
    hosts look up there."""
    copy = library_copy(image)
    if copy is None:
        raise PublishFailed(
            f"{image!r} cannot name a pool image: give NAME:TAG with one lower-case name part "
            "(as `potluck-default:latest` or `python:3.12`); `docker tag` it so first"
        )
    repository, tag = copy
    return f"{registry_address}/{repository}:{tag}"


def publish_image(docker_url: str, registry_address: str, key_path: Path, image: str, *, quiet: bool) -> str:
    """Push `image` from the engine at `docker_url` into the library; its reference there and digest."""
    reference = library_reference(registry_address, image)
    try:
        issuer = TokenIssuer(load_signing_key(key_path))
    except SigningKeyError as exc:
        raise PublishFailed(f"cannot sign a push to the pool registry: {exc}") from None
    repository = reference.removeprefix(registry_address + "/").rpartition(":")[0]
    token = issuer.issue("operator", [Scope("repository", repository, frozenset({"pull", "push"}))]).token
    try:
        client = docker.DockerClient(base_url=docker_url)
    except docker.errors.DockerException as exc:
        raise PublishFailed(f"no Docker engine answers at {docker_url} ({exc}); is it running?") from None
    try:
        try:
            local = client.images.get(image)
        except docker.errors.ImageNotFound:
            raise PublishFailed(
                f"the Docker engine at {docker_url} has no image {image}; build or load it first"
            ) from None
        local.tag(reference)
        try:
            digest = push_with_progress(client, reference, {"registrytoken": token}, quiet)
        finally:
            # The engine keeps the image under the name users ask for, not under the library's;
            # a failed untag must not hide how the push went.
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(reference, noprune=True)
    except ClientError as exc:
        raise PublishFailed(str(exc)) from None
    except docker.errors.APIError as exc:
        raise PublishFailed(f"the push to {registry_address} failed: {exc.explanation or exc}") from None
    finally:
        client.close()
    return f"{reference}@{digest}" if digest else reference


@click.group()
def images() -> None:
    """The pool's own images, which every user may run."""


@images.command()
@click.argument("image")
@click.option(
    "--docker-url",
    envvar="DOCKER_HOST",
    default=None,
    help="The engine holding IMAGE [env: DOCKER_HOST; default: the `potluck up` pool's engine].",
)
@click.option(
    "--registry-address",
    envvar="POTLUCK_REGISTRY_ADDRESS",
    default=None,
    help="The pool registry, as image names write it [default: the `potluck up` pool's].",
)
@click.option(
    "--registry-token-key",
    envvar="POTLUCK_REGISTRY_TOKEN_KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The allocator's registry signing key [default: the `potluck up` pool's].",
)
@up_state_dir_option
def publish(
    image: str,
    docker_url: str | None,
    registry_address: str | None,
    registry_token_key: Path | None,
    state_dir: Path | None,
) -> None:
    """Publish IMAGE (NAME:TAG) for the whole pool: every host that lacks it pulls it from the pool
    registry's library when an allocation asks for NAME:TAG."""
    from potluck.up_state import default_state_dir, no_pool_in, pool_engine, pool_files, running

    up_dir = state_dir or default_state_dir()
    docker_url = docker_url or pool_engine(up_dir)
    up = running(up_dir)
    if up is not None:
        registry_address = registry_address or up.registry
        registry_token_key = registry_token_key or pool_files(up_dir).registry_keys_dir / KEY_FILE
    if docker_url is None or registry_address is None or registry_token_key is None:
        raise click.UsageError(
            "give --docker-url, --registry-address and --registry-token-key: "
            + no_pool_in(up_dir, state_dir_option=True)
        )
    try:
        published = publish_image(
            docker_url, registry_address, registry_token_key, image, quiet=not sys.stderr.isatty()
        )
    except PublishFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.REFUSED)
    click.echo(f"published {published}; every host pulls it there for --image {image}")
