"""The images the pool brought to this machine: the ledger that keeps a member's own images theirs.

A member's Docker engine holds the member's images too: ones they built (`acme/internal-app:dev`,
with its source and whatever secret was baked in) or pulled with their own registry login. hostd
used to run whatever the engine held under the name an allocation asked for, so any pool user
who named such an image got it run, with a shell in it, and could read it; and every name the
engine held was reported to the pool. Now an image the engine holds is the pool's to run only
when (`PoolImages.admits`)

- hostd pulled it for the pool: its id is in this ledger (the id the engine gives the pulled
  name once the pull is done; `potluck up` records the images it builds for its own pool), or
- the member's `allowed_images` is not empty and admits the name asked for: the member listed
  what may run here, which is their consent.

Anything else the engine holds is, for the pool, absent: hostd pulls the name the pool's way
(the pool registry's token, or anonymously; never the member's login, which dockerd does not
hold), as for an image the engine lacks, and a pull that fails fails the allocation on this host
(image_pull_failed) without the member's image ever running. A pull that succeeds moves the
name to the pulled image, as `docker pull` does: the member's own image stays on the engine
under its id and its other names. Only what the pool may run here is reported in ImagesHeld
(`shared_names`), so a member's private names do not leave the machine.

An image id is the digest of the image's content, so a member's later build under the same
name has another id, and is not the pool's. Ids the engine no longer holds (removed by the
member or by the image cache) are pruned at each inventory scan. The ledger is a JSON list in
`<state_dir>/pool-images.json`, written whole to a temporary file and renamed over (a crash
leaves the old list or the new, never half of one), readable by hostd's user alone.
"""

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog

from potluck.contracts.image_reference import image_allowed
from potluck.kernel.private_files import replace_private

__all__ = ["LEDGER_FILE", "PoolImages", "shared_names"]

log = structlog.get_logger(__name__)

LEDGER_FILE = "pool-images.json"


def shared_names(
    image_id: str, names: Iterable[str], *, pool_ids: frozenset[str], allowed: Sequence[str]
) -> set[str]:
    """The names of one engine image that hostd may tell the pool about. Pure.

    All of them for an image the pool brought (its id in `pool_ids`); for any other, only the
    names a non-empty `allowed` admits (the member listed them), with the digest names of their
    repositories (`allowed` rarely spells digests, and a request pinned to one is matched by
    them); none when `allowed` is empty. `names` are normalised (host_images.held_names).
    """
    names = set(names)
    if image_id in pool_ids:
        return names
    if not allowed:
        return set()
    admitted = {name for name in names if "@" not in name and image_allowed(tuple(allowed), name)}
    repositories = {name.rpartition(":")[0] for name in admitted}
    return admitted | {name for name in names if "@" in name and name.partition("@")[0] in repositories}


class PoolImages:
    """The ids of the images the pool brought to this engine, kept in `path` (None: in memory
    only). Safe to call from the event loop and from a pull's thread alike."""

    def __init__(self, path: Path | None, allowed_images: Sequence[str] = ()) -> None:
        self.path = path
        self.allowed = tuple(allowed_images)
        self._lock = threading.Lock()
        self._ids: set[str] = self._read() if path is not None else set()

    @classmethod
    def in_state_dir(cls, state_dir: Path, allowed_images: Sequence[str] = ()) -> "PoolImages":
        return cls(state_dir / LEDGER_FILE, allowed_images)

    def _read(self) -> set[str]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            # Unreadable: the pool's images are pulled again when asked for (a pull of what the
            # engine holds fetches no layer), and nothing of the member's runs meanwhile.
            log.warning(
                "hostd.pool_images_unreadable",
                path=str(self.path),
                error=str(exc),
                hint="the pool's images are pulled again as allocations ask for them; the file is rewritten",
            )
            return set()
        if not isinstance(data, list):
            return set()
        return {str(item) for item in data if isinstance(item, str) and item.startswith("sha256:")}

    @property
    def ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def __contains__(self, image_id: object) -> bool:
        with self._lock:
            return image_id in self._ids

    def admits(self, image: str, image_id: str) -> bool:
        """May the pool run the engine's image `image_id`, asked for as `image`?"""
        return image_id in self or (bool(self.allowed) and image_allowed(self.allowed, image))

    def add(self, image_id: str) -> None:
        """The pool brought `image_id` (a pull for an allocation finished): recorded for good."""
        if not image_id:
            return
        with self._lock:
            if image_id in self._ids:
                return
            self._ids.add(image_id)
            self._write()
        log.info("hostd.pool_image_recorded", image=image_id[:19])

    def prune(self, present: Iterable[str], known_before: frozenset[str]) -> None:
        """Forget the ids of `known_before` (the ledger before the engine was listed) that the
        listing, `present`, no longer holds; one added since the listing began is kept."""
        gone = known_before - set(present)
        if not gone:
            return
        with self._lock:
            if not gone & self._ids:
                return
            self._ids -= gone
            self._write()
        log.info("hostd.pool_images_pruned", gone=len(gone))

    def _write(self) -> None:
        """The whole ledger, atomically, private to hostd's user (under the lock). A write that
        fails keeps the ledger in memory, saying so: only a restart before the next write forgets."""
        if self.path is None:
            return
        try:
            self._replace(self.path)
        except OSError as exc:
            log.warning(
                "hostd.pool_images_not_saved",
                path=str(self.path),
                error=str(exc),
                hint="free space or fix the state_dir's permissions; until then a restarted hostd "
                "pulls the pool's images again before it runs them",
            )

    def _replace(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_private(path, json.dumps(sorted(self._ids)), fsync=True)
