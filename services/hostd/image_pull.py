"""Pulling an allocation's image that the engine lacks: with a token from the allocator for the pool
registry, anonymously from the registries the member allows (never one on the member's own machine
or network unless named: local_registries.py), retried with backoff, progress reported.

The engine does the pull (outbound only, from the laptop); its progress stream is read in a thread
of its own, off the event loop, and each pull's progress goes out as a ContainerPulling report when
it starts and at most every `progress_every_s`. A pull that fails is tried again after a growing
pause (tenacity: the retry policy is a dependency already and says what it does in one place), a
few times, then reported as failed with the image, its registry and the last error. Two things are
not retried: an image whose layers announce more than the member donated as disk (or that takes
more once unpacked, when it is removed again), and a token the allocator refuses for this
allocation (it is not ours to pull).

A pull that stops progressing fails instead of showing `pulling` for ever: a registry that
answers and then sends no more bytes (a half-dead link, a server stuck mid-layer) left the
engine waiting without end, and the allocation with it, since neither the engine nor the SDK
(which reads a pull without any timeout) ever gives up. Progress is what the engine's stream
says changed: more bytes fetched, a layer on to its next step (downloading, extracting, ...).
No change for `stall_s` (POTLUCK_HOSTD_PULL_STALL_S, 120 s) fails the attempt, saying so: a
silent stream by the socket's read timeout, a chatty one that says nothing new by the clock.

Pool registry tokens travel to the engine as `auth_config={"registrytoken": ...}`: the engine sends
it as the bearer token to the registry (Moby's `AuthConfig.RegistryToken`), so the host never
handles a password and the token is good for one repository, for minutes.

The id the engine gives the pulled name goes in the ledger of the pool's images (pool_images.py):
only those, and what the member's allowed_images lists, run here; a member's own image under
the same name is pulled over, as `docker pull` would (the name moves, their image stays).

A Docker Hub name that the pool's library holds (the default image of a pool from `potluck up`)
comes with the library copy's reference: that is pulled, tagged with the allocation's name, and
its own name untagged, so the engine holds the image as if pulled by that name.
"""

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from potluck.contracts.image_reference import DEFAULT_REGISTRY, InvalidReference, engine_name, parse_reference
from potluck.contracts.messages import ImageToken
from potluck.contracts.registry_locality import host_of
from potluck.contracts.reports import ContainerPulling, Report
from potluck.hostd.docker_sdk import docker, requests
from potluck.hostd.local_registries import local_registry_refusal
from potluck.hostd.pool_images import PoolImages
from potluck.hostd.shared_details import without_local_addresses

__all__ = ["ImagePuller", "PullFailed", "PullProgress", "PullSettings", "TokenSource"]

log = structlog.get_logger(__name__)

#: (alloc_id, image) -> a registry token for the pool registry, or None: not a pool image, pull
#: it anonymously. Raises PullFailed when the allocator refuses or cannot be asked.
TokenSource = Callable[[str, str], Awaitable[ImageToken | None]]


class PullFailed(Exception):
    """The image could not be pulled; `permanent`: trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class PullSettings:
    """How hard to try. The environment may shorten it (tests, a member on a slow link lengthen it)."""

    attempts: int = 4
    first_backoff_s: float = 2.0
    max_backoff_s: float = 30.0
    progress_every_s: float = 2.0
    #: No progress for this long fails the attempt (retried as any failure).
    stall_s: float = 120.0

    @classmethod
    def from_env(cls) -> "PullSettings":
        defaults = cls()
        return cls(
            attempts=max(1, int(os.environ.get("POTLUCK_HOSTD_PULL_ATTEMPTS", defaults.attempts))),
            first_backoff_s=max(
                0.0, float(os.environ.get("POTLUCK_HOSTD_PULL_BACKOFF_S", defaults.first_backoff_s))
            ),
            max_backoff_s=defaults.max_backoff_s,
            progress_every_s=defaults.progress_every_s,
            stall_s=max(1.0, float(os.environ.get("POTLUCK_HOSTD_PULL_STALL_S", defaults.stall_s))),
        )


@dataclass
class PullProgress:
    """Per-layer progress from the engine's stream, summed: compressed bytes fetched and announced."""

    current: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    #: Each layer's step (the status's first word: Downloading, Extracting, ...); byte counts
    #: while extracting move too, but only the step and the fetched bytes are summed here.
    steps: dict[str, str] = field(default_factory=dict)

    def update(self, line: dict[str, Any]) -> None:
        layer = str(line.get("id") or "")
        status = str(line.get("status") or "")
        detail = line.get("progressDetail") or {}
        if not layer:
            return
        self.steps[layer] = status.split(" ", 1)[0]
        if status == "Extracting" and isinstance(detail, dict):
            self.steps[layer] = f"Extracting {detail.get('current')}"
        if status == "Downloading" and isinstance(detail, dict):
            total = int(detail.get("total") or 0)
            if total > 0:
                self.total[layer] = total
            self.current[layer] = int(detail.get("current") or 0)
        elif status in ("Download complete", "Pull complete", "Already exists") and layer in self.total:
            self.current[layer] = self.total[layer]

    @property
    def done_bytes(self) -> int:
        return sum(self.current.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.total.values())

    def mark(self) -> tuple[int, tuple[tuple[str, str], ...]]:
        """What changes when the pull progresses; the same mark means nothing moved."""
        return self.done_bytes, tuple(sorted(self.steps.items()))


def registry_of(image: str) -> str:
    with contextlib.suppress(InvalidReference):
        return parse_reference(image).registry
    return DEFAULT_REGISTRY


class ImagePuller:
    def __init__(
        self,
        docker_url: str,
        report: Callable[[Report], None],
        token_source: TokenSource,
        *,
        disk_limit_bytes: int,
        named_registries: frozenset[str] = frozenset(),
        settings: PullSettings | None = None,
        pool_images: PoolImages | None = None,
    ) -> None:
        """`pool_images`: the ledger each pulled image's id goes in (pool_images.py), which
        is what lets hostd run it."""
        self.docker_url = docker_url
        self.report = report
        self.token_source = token_source
        self.disk_limit_bytes = disk_limit_bytes
        #: Registries the member named in allowed_images: pulled from even on the member's network.
        self.named_registries = named_registries
        self.settings = settings or PullSettings.from_env()
        self.pool_images = pool_images

    async def pull(self, alloc_id: str, image: str) -> None:
        """Pull `image` for `alloc_id`, retrying; PullFailed names the image, registry and error."""
        registry = registry_of(image)
        self.report(ContainerPulling(alloc_id=alloc_id, image=image))
        attempt = 0
        # Whether the last attempt failed asking the allocator (then no registry was tried).
        asking = False
        try:
            async for attempting in AsyncRetrying(
                stop=stop_after_attempt(self.settings.attempts),
                wait=wait_exponential(
                    multiplier=self.settings.first_backoff_s,
                    min=self.settings.first_backoff_s,
                    max=self.settings.max_backoff_s,
                ),
                retry=retry_if_exception(lambda exc: isinstance(exc, PullFailed) and not exc.permanent),
                reraise=True,
            ):
                with attempting:
                    attempt = attempting.retry_state.attempt_number
                    asking = True
                    token = await self.token_source(alloc_id, image)
                    asking = False
                    source = image
                    if token is not None and token.reference:  # the pool library's copy
                        source, registry = token.reference, token.registry
                    if token is None:
                        refusal = await local_registry_refusal(registry, self.named_registries)
                        if refusal:
                            raise PullFailed(refusal, permanent=True)
                    await self._attempt(alloc_id, image, source, registry, token, attempt)
        except PullFailed as exc:
            tries = "once" if attempt <= 1 else f"{attempt} times"
            where = "" if asking else f" from the registry {registry}"
            why = str(exc)
            if not asking:
                # The engine's words (and this machine's, resolving a name) may name the member's
                # addresses: the user reads them as a placeholder, the member's log whole, but
                # for the registry pulled from (the image's own, or the pool's for a library
                # name). The allocator's words (asking) are the pool's, kept whole.
                log.info(
                    "hostd.image_pull_failed", alloc_id=alloc_id, image=image, registry=registry, error=why
                )
                why = without_local_addresses(why, named=(host_of(registry),))
            raise PullFailed(
                f"could not pull {image}{where} (tried {tries}): {why}", permanent=exc.permanent
            ) from None
        log.info("hostd.image_pulled", alloc_id=alloc_id, image=image, registry=registry, attempts=attempt)

    async def _attempt(
        self, alloc_id: str, image: str, source: str, registry: str, token: ImageToken | None, attempt: int
    ) -> None:
        auth: dict[str, str] = {"registrytoken": token.token} if token else {}
        try:
            # The engine gets whole references (engine_name), as the container's create does.
            pulled, named = engine_name(source), engine_name(image)
        except InvalidReference as exc:
            raise PullFailed(str(exc), permanent=True) from None
        log.info(
            "hostd.image_pull_started",
            alloc_id=alloc_id,
            image=image,
            registry=registry,
            source=source,
            attempt=attempt,
            with_token=token is not None,
        )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        cancelled = threading.Event()

        def finish(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def progress(snapshot: tuple[int, int]) -> None:
            self.report(
                ContainerPulling(
                    alloc_id=alloc_id, image=image, done_bytes=snapshot[0], total_bytes=snapshot[1]
                )
            )

        def publish(snapshot: tuple[int, int]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: hostd is stopping
                loop.call_soon_threadsafe(progress, snapshot)

        def work() -> None:
            try:
                self._stream(pulled, auth, cancelled, publish)
                if pulled != named and not cancelled.is_set():
                    self._name_as(pulled, named)
                if not cancelled.is_set():
                    image_id = self._within_disk(named)
                    if self.pool_images is not None:
                        self.pool_images.add(image_id)
            except BaseException as exc:  # handed to the loop, raised there
                with contextlib.suppress(RuntimeError):  # the loop is gone: hostd is stopping
                    loop.call_soon_threadsafe(finish, exc)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finish, None)

        # A daemon thread, not the loop's executor: a pull blocked on a silent registry must not
        # hold up hostd's exit, and a released allocation's pull is left to end on its own.
        threading.Thread(target=work, name=f"pull-{alloc_id[:12]}", daemon=True).start()
        try:
            await done
        finally:
            cancelled.set()

    def _within_disk(self, image: str) -> str:
        """Refuse the pulled `image` when, unpacked, it takes more than the donated disk, and
        untag it (which frees it unless another name holds it). The stream's check sees only
        compressed sizes, which a layer of zeros makes a thousandth of what it unpacks to: such
        an image must not stay on the member's disk, nor have a container made from it. Returns
        the id the engine gives `image` now: the image the pull brought."""
        with self._engine(f"pulled {image} but could not read its size") as client:
            attrs = client.inspect_image(image)  # type: ignore[no-untyped-call]
            size = int(attrs.get("Size") or 0)
            if size <= self.disk_limit_bytes:
                return str(attrs.get("Id") or "")
            with contextlib.suppress(docker.errors.APIError):
                client.remove_image(image)
        log.warning("hostd.image_too_large_unpacked", image=image, size=size, limit=self.disk_limit_bytes)
        raise PullFailed(
            f"unpacked, it takes {size} bytes, more than the {self.disk_limit_bytes} bytes of disk "
            "this host donates",
            permanent=True,
        )

    def _name_as(self, source: str, image: str) -> None:
        """Give the pulled `source` the allocation's name `image`, and drop the source's own."""
        repository, tag = image, "latest"
        if image.rfind(":") > image.rfind("/"):
            repository, _, tag = image.rpartition(":")
        with self._engine(f"pulled {source} but could not name it {image}") as client:
            client.tag(source, repository, tag)
            client.remove_image(source, noprune=True)

    @contextlib.contextmanager
    def _engine(self, failing: str) -> Iterator[docker.APIClient]:
        """A client of the engine for one step after the pull, closed after it; an engine that
        fails the step fails the pull, saying `failing` and why."""
        try:
            client = docker.APIClient(base_url=self.docker_url, version="auto", timeout=60)
            try:
                yield client
            finally:
                client.close()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise PullFailed(f"{failing}: {exc}"[:1000]) from exc

    def _stream(
        self,
        image: str,
        auth: dict[str, str],
        cancelled: threading.Event,
        publish: Callable[[tuple[int, int]], None],
    ) -> None:
        """The blocking pull, read line by line; stops reading (the engine then drops the pull)
        when `cancelled` is set."""
        progress = PullProgress()
        last = moved = time.monotonic()
        mark = progress.mark()
        stall_s = self.settings.stall_s
        try:
            client = docker.APIClient(base_url=self.docker_url, version="auto", timeout=60)
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise PullFailed(f"no Docker engine answers at {self.docker_url}: {exc}") from exc
        try:
            # Not client.pull(): it reads the stream without a timeout, so an engine waiting on
            # a silent registry held this thread, and the allocation `pulling`, for ever. The
            # read timeout here ends a silent stream after stall_s (a name with a tag is one the
            # engine's API takes whole as fromImage).
            response = client.post(
                f"{client.base_url}/v{client.api_version}/images/create",
                params={"fromImage": image},
                headers={"X-Registry-Auth": docker.auth.encode_header(auth)} if auth else {},
                stream=True,
                timeout=(60, stall_s),
            )
            if response.status_code >= 400:
                raise PullFailed(_engine_error(response)[:1000])
            for raw in response.iter_lines():
                if cancelled.is_set():
                    return
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if line.get("error") or line.get("errorDetail"):
                    detail = line.get("errorDetail") or {}
                    message = line.get("error") or (detail.get("message") if isinstance(detail, dict) else "")
                    raise PullFailed(str(message)[:1000])
                progress.update(line)
                if progress.total_bytes > self.disk_limit_bytes:
                    raise PullFailed(
                        f"its layers take at least {progress.total_bytes} bytes, more than the "
                        f"{self.disk_limit_bytes} bytes of disk this host donates",
                        permanent=True,
                    )
                now = time.monotonic()
                if (now_mark := progress.mark()) != mark:
                    mark, moved = now_mark, now
                elif now - moved >= stall_s:
                    raise PullFailed(self._stalled(progress))
                if now - last >= self.settings.progress_every_s:
                    last = now
                    publish((progress.done_bytes, progress.total_bytes))
            publish((progress.done_bytes, progress.total_bytes))
        except requests.RequestException as exc:
            if time.monotonic() - moved >= stall_s:
                raise PullFailed(self._stalled(progress)) from exc
            raise PullFailed(f"{type(exc).__name__}: {exc}"[:1000]) from exc
        except (docker.errors.DockerException, OSError, ValueError) as exc:
            raise PullFailed(f"{type(exc).__name__}: {exc}"[:1000]) from exc
        finally:
            client.close()

    def _stalled(self, progress: PullProgress) -> str:
        """Why a pull that stopped progressing was given up, with how far it came."""
        log.warning(
            "hostd.image_pull_stalled",
            stall_s=self.settings.stall_s,
            done_bytes=progress.done_bytes,
            total_bytes=progress.total_bytes,
            hint="the registry (or the link to it) stopped sending; POTLUCK_HOSTD_PULL_STALL_S is the bound",
        )
        came = f" after {progress.done_bytes} of {progress.total_bytes} bytes" if progress.total_bytes else ""
        return f"no progress for {self.settings.stall_s:g} s{came}: the registry stopped sending"


def _engine_error(response: Any) -> str:
    """The engine's refusal of a pull request, in its own words where it gave some."""
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return f"{response.status_code} {response.reason}: {response.text}"
