"""The ledger of the images the pool brought to a member's machine (pool_images.py), without an
engine: what it admits, which names it lets the pool hear of, and how it is kept on disk."""

import json
import stat
from pathlib import Path

from potluck.hostd.pool_images import LEDGER_FILE, PoolImages, shared_names

POOLS = "sha256:" + "a" * 64
MEMBERS = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64


def test_a_member_image_is_admitted_only_by_a_non_empty_allow_list() -> None:
    """Tried: the same name asked for, held as the pool's image and as the member's, with an empty
    allow-list and one that lists it. Must hold: the pool's runs either way; the member's only
    where the member listed it."""
    empty = PoolImages(None)
    empty.add(POOLS)
    assert empty.admits("acme/internal-app:dev", POOLS)
    assert not empty.admits("acme/internal-app:dev", MEMBERS)
    listed = PoolImages(None, ["acme/internal-app:*"])
    assert listed.admits("acme/internal-app:dev", MEMBERS)
    assert not listed.admits("acme/other:dev", MEMBERS)


def test_only_the_names_the_pool_may_run_are_shared() -> None:
    """Tried: the names (tags and digests) of a pool image, of a member image with an empty
    allow-list, and of a member image with two repositories of which the allow-list admits one.
    Must hold: all of the pool image's, none of the first member image's, only the admitted tag
    and its repository's digest of the second's."""
    digest = "sha256:" + "d" * 64
    names = {
        "docker.io/acme/internal-app:dev",
        f"docker.io/acme/internal-app@{digest}",
        "docker.io/library/potluck-test:latest",
        f"docker.io/library/potluck-test@{digest}",
    }
    pool_ids = frozenset({POOLS})
    assert shared_names(POOLS, names, pool_ids=pool_ids, allowed=[]) == names
    assert shared_names(MEMBERS, names, pool_ids=pool_ids, allowed=[]) == set()
    assert shared_names(MEMBERS, names, pool_ids=pool_ids, allowed=["potluck-test:*"]) == {
        "docker.io/library/potluck-test:latest",
        f"docker.io/library/potluck-test@{digest}",
    }


def test_the_ledger_outlives_hostd_in_a_private_file(tmp_path: Path) -> None:
    """Tried: an id recorded, then the ledger read again as a restarted hostd reads it. Must
    hold: the id is there, the file is readable by its owner alone, and no temporary file is
    left beside it."""
    PoolImages.in_state_dir(tmp_path).add(POOLS)
    again = PoolImages.in_state_dir(tmp_path)
    assert POOLS in again
    assert not again.admits("x:1", MEMBERS)
    mode = stat.S_IMODE((tmp_path / LEDGER_FILE).stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert [p.name for p in tmp_path.iterdir()] == [LEDGER_FILE]


def test_pruning_forgets_what_the_engine_lost_but_not_what_arrived_during_the_listing(tmp_path: Path) -> None:
    """Tried: two ids recorded; the engine listed holding one of them; a third id recorded after
    the listing began (a pull finishing meanwhile); then pruned. Must hold: the lost id is gone,
    on disk too; the held one and the one recorded meanwhile stay."""
    ledger = PoolImages.in_state_dir(tmp_path)
    ledger.add(POOLS)
    ledger.add(MEMBERS)
    known = ledger.ids
    ledger.add(OTHER)
    ledger.prune({POOLS}, known)
    assert ledger.ids == {POOLS, OTHER}
    assert set(json.loads((tmp_path / LEDGER_FILE).read_text())) == {POOLS, OTHER}


def test_an_unreadable_ledger_admits_nothing_and_is_rewritten(tmp_path: Path) -> None:
    """Tried: a ledger file cut short (not JSON), read, then an id recorded. Must hold: nothing is
    admitted from it, and the next record writes a whole ledger again."""
    (tmp_path / LEDGER_FILE).write_text('["sha256:')
    ledger = PoolImages.in_state_dir(tmp_path)
    assert ledger.ids == frozenset()
    ledger.add(POOLS)
    assert json.loads((tmp_path / LEDGER_FILE).read_text()) == [POOLS]
