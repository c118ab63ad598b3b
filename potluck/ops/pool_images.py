"""`potluck ops images publish`: an image for the whole pool, in the pool registry's library.

Users' images live in their own namespaces of the pool registry. The pool's own images (the
default image of a pool from `potluck up`, a course's common environment) are published by the
operator under `library/`, Docker Hub's convention for official images: an allocation that asks
for `potluck-default:latest` on a host whose engine lacks it is pulled from
`<registry>/library/potluck-default:latest` and tagged with the name asked for, so every member's
machine can run it without reaching the internet (services/allocator/image_tokens.py decides).
Every user may pull the library; only the holder of the registry's signing key writes to it.

The push goes from the operator's Docker engine with a token this command signs itself with the
key the allocator signs with, so it needs no user and no running allocator. An image the library
already holds under that name (the manifest there names the engine's image id as its
configuration) is not pushed again: the engine would compress every layer anew only to find the
registry has it. `potluck up` publishes its default image without its engine at all
(`publish_files`): from the image's configuration and its layer compressed once beside the cached
root filesystem (potluck.localstack.default_image).
"""

import contextlib
import hashlib
import http.client
import ipaddress
import json
import sys
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import click
import docker
import docker.errors

from potluck.allocator.image_tokens import library_copy
from potluck.allocator.registry_access import Scope
from potluck.allocator.registry_tokens import TokenIssuer
from potluck.cli_options import up_state_dir_option
from potluck.kernel.signing_keys import KEY_FILE, SigningKeyError, load_signing_key
from potluck.localstack.default_image import Blob, ImageFiles, config_digest
from potluck.user.client import ClientError, ExitCode
from potluck.user.images import push_with_progress

__all__ = ["images", "library_reference", "publish_files", "publish_image"]


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


#: A manifest as Docker pushes one (schema 2): one configuration, gzip-compressed layers.
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _in_library(registry_address: str, reference: str) -> tuple[str, str]:
    """The repository and the tag of a `library_reference`."""
    repository, _, tag = reference.removeprefix(registry_address + "/").rpartition(":")
    return repository, tag


def _push_token(registry_address: str, key_path: Path, reference: str) -> str:
    try:
        issuer = TokenIssuer(load_signing_key(key_path))
    except SigningKeyError as exc:
        raise PublishFailed(f"cannot sign a push to the pool registry: {exc}") from None
    repository, _ = _in_library(registry_address, reference)
    return issuer.issue("operator", [Scope("repository", repository, frozenset({"pull", "push"}))]).token


class _Registry:
    """The registry API (distribution's /v2/) for one repository, as the signed operator.

    Plain HTTP on loopback, as Docker itself speaks to a registry there; HTTPS elsewhere."""

    def __init__(self, registry_address: str, repository: str, token: str) -> None:
        host = urlsplit(f"//{registry_address}").hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        self.base = f"{'http' if loopback else 'https'}://{registry_address}"
        self.repository = repository
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(urljoin(self.base + "/", url))
        kind = http.client.HTTPConnection if parts.scheme == "http" else http.client.HTTPSConnection
        conn = kind(parts.netloc, timeout=600)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def manifest_config(self, tag: str) -> tuple[str, str] | None:
        """The configuration digest and the manifest digest under `tag`, or None if it has none."""
        status, headers, body = self.request(
            "GET", f"/v2/{self.repository}/manifests/{tag}", headers={"Accept": MANIFEST_TYPE}
        )
        if status != 200:
            return None
        try:
            config = str(json.loads(body)["config"]["digest"])
        except (ValueError, KeyError, TypeError):
            return None
        return config, headers.get("docker-content-digest", "")

    def has_blob(self, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"/v2/{self.repository}/blobs/{digest}")
        return status == 200

    def put_blob(self, digest: str, size: int, body: bytes | BinaryIO) -> None:
        status, headers, answer = self.request("POST", f"/v2/{self.repository}/blobs/uploads/")
        if status != 202 or "location" not in headers:
            raise PublishFailed(f"the registry refused an upload ({status}): {answer[:300]!r}")
        location = headers["location"]
        url = f"{location}{'&' if '?' in location else '?'}digest={digest}"
        status, _, answer = self.request(
            "PUT",
            url,
            body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if status != 201:
            raise PublishFailed(f"the registry refused blob {digest} ({status}): {answer[:300]!r}")


def publish_files(registry_address: str, key_path: Path, image: str, files: ImageFiles) -> str:
    """Put the image `files` describe into the library as `image`, without any engine: each blob the
    registry lacks, then the manifest. Its reference there and digest, as `publish_image`'s."""
    reference = library_reference(registry_address, image)
    repository, tag = _in_library(registry_address, reference)
    registry = _Registry(registry_address, repository, _push_token(registry_address, key_path, reference))
    config = Blob(Path(), config_digest(files.config), len(files.config))
    try:
        held = registry.manifest_config(tag)
        if held is not None and held[0] == config.digest and held[1]:
            return f"{reference}@{held[1]}"
        if not registry.has_blob(files.layer.digest):
            with files.layer.path.open("rb") as layer:
                registry.put_blob(files.layer.digest, files.layer.size, layer)
        if not registry.has_blob(config.digest):
            registry.put_blob(config.digest, config.size, files.config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "size": config.size, "digest": config.digest},
                "layers": [{"mediaType": LAYER_TYPE, "size": files.layer.size, "digest": files.layer.digest}],
            },
            indent=3,
        ).encode()
        status, headers, answer = registry.request(
            "PUT",
            f"/v2/{registry.repository}/manifests/{tag}",
            body=manifest,
            headers={"Content-Type": MANIFEST_TYPE},
        )
    except (OSError, http.client.HTTPException) as exc:
        raise PublishFailed(f"the push to {registry_address} failed: {exc}") from None
    if status != 201:
        raise PublishFailed(f"the registry refused the manifest of {image} ({status}): {answer[:300]!r}")
    digest = headers.get("docker-content-digest") or f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    return f"{reference}@{digest}"


def _already_there(registry_address: str, token: str, reference: str, image_id: str) -> str | None:
    """The manifest digest under `reference` when it names `image_id` as its configuration (the
    library holds this very image), else None; None too when the registry cannot tell."""
    repository, tag = _in_library(registry_address, reference)
    try:
        held = _Registry(registry_address, repository, token).manifest_config(tag)
    except (OSError, http.client.HTTPException):  # the engine's push then says what is wrong
        return None
    if held is None or held[0] != image_id or not held[1]:
        return None
    return held[1]


def publish_image(docker_url: str, registry_address: str, key_path: Path, image: str, *, quiet: bool) -> str:
    """Push `image` from the engine at `docker_url` into the library; its reference there and digest."""
    reference = library_reference(registry_address, image)
    token = _push_token(registry_address, key_path, reference)
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
        held = _already_there(registry_address, token, reference, str(local.id))
        if held is not None:
            return f"{reference}@{held}"
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
