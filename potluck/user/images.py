"""`potluck image push` and `potluck image ls`: users bring their own images to the pool.

The push goes from the user's own Docker engine (DOCKER_HOST, as the docker
CLI uses it; when it is not set and the default socket does not answer or lacks
the image, the engine of the `potluck up` pool running here, which started a
private one where no Docker answered; the output names the engine used)
straight to the pool registry, authenticated with the user's
Potluck token; the allocator only says where the registry is and signs the
registry's access tokens. Progress is a bar per layer on a terminal (rich), one
line per finished layer when piped.
"""

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import click
import docker
import docker.constants
import docker.errors
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from potluck.terminal import foreign
from potluck.user.cli import JSON, bail, call_api, err, out
from potluck.user.client import ClientError, ExitCode, Login


def target_reference(prefix: str, image: str) -> str:
    """Where `image` goes in the user's namespace: `prefix` + its last path part and tag.

    `sim:2` and `registry.example.org/team/sim:2` both become `<registry>/<user>/sim:2`;
    an image without a tag is pushed as `latest`, as `docker push` would. A name already in
    the user's namespace stays as it is; one in another namespace of the pool registry (another
    user's, the library) is refused: it was once pushed into the user's own under its last part,
    over whatever image of theirs had that name.
    """
    name, digest_sep, _ = image.partition("@")
    if digest_sep:
        raise ClientError("push a tagged image, not a digest: tag it first (`docker tag`)", ExitCode.USAGE)
    path, last = name.rsplit("/", 1) if "/" in name else ("", name)
    repository, colon, tag = last.partition(":")
    tag = tag if colon else "latest"
    registry = prefix.split("/", 1)[0]
    if name.startswith(prefix):
        return f"{path}/{repository}:{tag}"
    if name.startswith(f"{registry}/"):
        raise ClientError(
            f"{image} is in another namespace of the pool registry than yours ({prefix}), where "
            f"only its owner pushes: tag it for yours (`docker tag {image} {prefix}{repository}:{tag}`) "
            "and push that",
            ExitCode.USAGE,
        )
    return f"{prefix}{repository}:{tag}"


#: Where docker-py (and the docker CLI) look when DOCKER_HOST is not set.
DEFAULT_ENGINE = docker.constants.DEFAULT_UNIX_SOCKET.replace("http+unix://", "unix://")


@dataclass(frozen=True)
class Engine:
    """A client of the Docker engine a push goes from, its address, and how the output names it."""

    client: docker.DockerClient
    url: str
    named: str


def _engine(source: str) -> Engine:
    """The engine to push `source` from: DOCKER_HOST's when it is set (as the docker CLI's);
    else the default socket's, unless it does not answer or has no `source` while a `potluck up`
    pool runs here: then that pool's own engine (up_state.pool_engine, where `ops images
    publish` finds it too), which is where a user of such a pool built the image."""
    from potluck.up_state import default_state_dir, pool_engine

    exported = os.environ.get("DOCKER_HOST")
    if exported:
        return Engine(_connect(None), exported, f"the Docker engine at {exported} (DOCKER_HOST)")
    pool = pool_engine(default_state_dir())
    yours = f"your Docker engine at {DEFAULT_ENGINE}"
    if pool is None:
        return Engine(_connect(None), DEFAULT_ENGINE, yours)
    try:
        default = docker.from_env()
    except docker.errors.DockerException:
        why = f"nothing answers at {DEFAULT_ENGINE}"
    else:
        try:
            default.images.get(source)
        except docker.errors.ImageNotFound:
            default.close()
            why = f"the engine at {DEFAULT_ENGINE} has no image {source}"
        except docker.errors.DockerException:
            # Another failure of the engine that answers: the push says it, as it would have.
            return Engine(default, DEFAULT_ENGINE, yours)
        else:
            return Engine(default, DEFAULT_ENGINE, yours)
    named = f"the `potluck up` pool's Docker engine at {pool} (DOCKER_HOST is not set and {why})"
    return Engine(_connect(pool), pool, named)


def _connect(url: str | None) -> docker.DockerClient:
    """A client of the engine at `url` (None: DOCKER_HOST's, or the default socket's)."""
    try:
        return docker.from_env() if url is None else docker.DockerClient(base_url=url)
    except docker.errors.DockerException as exc:
        if url is not None:
            raise ClientError(
                f"cannot reach the `potluck up` pool's Docker engine at {url} ({exc}); is the pool "
                "running? (DOCKER_HOST names another engine)",
                ExitCode.UNREACHABLE,
            ) from None
        raise ClientError(
            f"cannot reach your Docker engine ({exc}); is it running? "
            f"(DOCKER_HOST says where{_pool_engine()})",
            ExitCode.UNREACHABLE,
        ) from None


def _pool_engine() -> str:
    """A hint naming the engine of a `potluck up` running here: on a machine where no Docker
    answered, that pool started a private one, which is where the user builds and pushes."""
    from potluck.up_state import default_state_dir, pool_engine

    pool = pool_engine(default_state_dir())
    if pool is None or os.environ.get("DOCKER_HOST") == pool:
        return ""
    return f"; the `potluck up` pool here runs its own: export DOCKER_HOST={pool}"


def push_with_progress(client: docker.DockerClient, reference: str, auth: dict[str, str], quiet: bool) -> str:
    """Push `reference` (tagged) to its registry with `auth`, showing each layer; its digest."""
    repository, _, tag = reference.rpartition(":")
    digest = ""
    lines = client.api.push(repository, tag, auth_config=auth, stream=True, decode=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, disable=quiet
    ) as progress:
        tasks: dict[str, Any] = {}
        for line in lines:
            if "error" in line:
                raise ClientError(f"the pool registry refused the push: {line['error']}", ExitCode.REFUSED)
            digest = line.get("aux", {}).get("Digest", digest)
            layer = line.get("id")
            if not layer or layer == tag:
                continue
            detail = line.get("progressDetail") or {}
            if layer not in tasks:
                tasks[layer] = progress.add_task(f"{layer} {line.get('status', '')}", total=None)
            progress.update(
                tasks[layer],
                description=f"{layer} {line.get('status', '')}",
                completed=detail.get("current", 0),
                total=detail.get("total"),
            )
            if quiet and line.get("status") in ("Pushed", "Layer already exists"):
                err.print(f"{layer}: {line['status']}", highlight=False)
    return digest


@click.group()
def image() -> None:
    """Bring your images to the pool and list them."""


@image.command()
@click.argument("source")
@JSON
def push(source: str, as_json: bool) -> None:
    """Push SOURCE from your Docker engine into your namespace of the pool registry.

    Prints the name to give `potluck alloc create --image`.
    """
    try:
        login = Login.load()
    except ClientError as exc:
        bail(exc)
    where = call_api("GET", "/v1/images")
    try:
        reference = target_reference(where["prefix"], source)
        engine = _engine(source)
        client = engine.client
        try:
            try:
                client.images.get(source).tag(reference)
            except docker.errors.ImageNotFound:
                raise ClientError(
                    f"{engine.named} has no image {source}; build or pull it first", ExitCode.USAGE
                ) from None
            quiet = as_json or not sys.stderr.isatty()
            digest = push_with_progress(
                client, reference, {"username": "potluck", "password": login.token}, quiet
            )
        except docker.errors.APIError as exc:
            raise ClientError(f"the push failed: {exc.explanation or exc}", ExitCode.REFUSED) from None
        finally:
            client.close()
    except ClientError as exc:
        bail(exc)
    if as_json:
        click.echo(json.dumps({"image": reference, "digest": digest, "engine": engine.url}))
    else:
        out.print(
            f"pushed {reference} ({digest}) from {engine.named}; use it with --image {reference}",
            highlight=False,
        )


@image.command(name="ls")
@JSON
def ls(as_json: bool) -> None:
    """Your images in the pool registry, then the pool's own (its library), which everyone may
    run: give either to --image as printed."""
    listing = call_api("GET", "/v1/images")
    if as_json:
        click.echo(json.dumps(listing))
        return
    for entry in listing["images"]:
        for tag in entry["tags"] or ["(no tags)"]:
            out.print(foreign(f"{entry['name']}:{tag}"), highlight=False)
    if not listing["images"]:
        err.print(
            f"no images of yours yet; `potluck image push IMAGE` puts one under {listing['prefix']}",
            highlight=False,
        )
    library = [
        f"{entry['name']}:{tag}" for entry in listing.get("library", []) for tag in entry["tags"] or []
    ]
    if library:
        err.print("the pool's own images, for everyone:", highlight=False)
        for name in library:
            out.print(foreign(name), highlight=False)
