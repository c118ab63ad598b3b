"""Digests and pages of a keyed read model, so a model of any size can be compared over NATS.

A model is rows by key (allocations by id, hosts by id...). Its keys fall into
`buckets` by a hash of the key, not by their sorted order: a key that one side
has and the other lacks changes one bucket, not every one after it. Each
bucket's digest covers its keys and the digest of each row (the row's
canonical JSON), so two sides that agree on the digests agree on every row,
and where they differ, the keys of one bucket's digests name the rows to fetch.

Rows are sent in pages under a byte budget: every answer stays far below NATS'
max payload (1 MB by default) whatever the pool's size.
"""

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PAGE_BUDGET",
    "Keyed",
    "bucket_count",
    "bucket_digests",
    "bucket_digests_yielding",
    "bucket_of",
    "canonical_json",
    "differing_buckets",
    "differing_keys",
    "key_digests",
    "keyed",
    "page_rows",
    "row_digest",
]

#: The most a page of rows may take (bytes of JSON): a quarter of NATS' default max payload.
PAGE_BUDGET = 256 * 1024
#: About this many keys per bucket: a bucket's key digests then take some 25 KB.
KEYS_PER_BUCKET = 512
#: Buckets at most: their digests take some 70 KB; past ~2,000,000 keys buckets grow instead.
MAX_BUCKETS = 4096


@dataclass(frozen=True)
class Keyed:
    """A model's keys and how to get one key's row (in canonical form), computed only when asked."""

    keys: Sequence[str]
    row: Callable[[str], Any]


def keyed(rows: Mapping[str, Any]) -> Keyed:
    return Keyed(keys=list(rows), row=rows.__getitem__)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def row_digest(value: Any) -> str:
    return hashlib.blake2b(canonical_json(value).encode(), digest_size=8).hexdigest()


def bucket_count(keys: int) -> int:
    """A power of two near keys / KEYS_PER_BUCKET, at least 1 and at most MAX_BUCKETS."""
    buckets = 1
    while buckets * KEYS_PER_BUCKET < keys and buckets < MAX_BUCKETS:
        buckets *= 2
    return buckets


def bucket_of(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % buckets


def key_digests(model: Keyed, bucket: int, buckets: int) -> dict[str, str]:
    """The digest of each row whose key falls in `bucket`, by key (sorted)."""
    mine = sorted(k for k in model.keys if bucket_of(k, buckets) == bucket)
    return {k: row_digest(model.row(k)) for k in mine}


def _combine(pairs: Iterable[tuple[str, str]]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for key, digest in pairs:
        h.update(key.encode())
        h.update(b"\0")
        h.update(digest.encode())
        h.update(b"\n")
    return h.hexdigest()


def bucket_digests(model: Keyed, buckets: int) -> list[str]:
    """One digest per bucket, over its keys (sorted) and their rows' digests."""
    members: list[list[str]] = [[] for _ in range(buckets)]
    for key in model.keys:
        members[bucket_of(key, buckets)].append(key)
    return [_combine((k, row_digest(model.row(k))) for k in sorted(keys)) for keys in members]


async def bucket_digests_yielding(model: Keyed, buckets: int, every: int = 500) -> list[str]:
    """`bucket_digests`, letting the event loop run every `every` rows: a service's 100,000 rows
    take seconds to digest, and it must go on serving meanwhile. Its rows must not change
    meanwhile (a snapshot of immutable states)."""
    digests: dict[str, str] = {}
    members: list[list[str]] = [[] for _ in range(buckets)]
    for n, key in enumerate(model.keys):
        if n % every == every - 1:
            await asyncio.sleep(0)
        digests[key] = row_digest(model.row(key))
        members[bucket_of(key, buckets)].append(key)
    return [_combine((k, digests[k]) for k in sorted(keys)) for keys in members]


def differing_buckets(mine: Sequence[str], theirs: Sequence[str]) -> list[int]:
    if len(mine) != len(theirs):
        raise ValueError(f"cannot compare {len(mine)} buckets with {len(theirs)}")
    return [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]


def differing_keys(mine: Mapping[str, str], theirs: Mapping[str, str]) -> list[str]:
    """The keys whose rows differ or that only one side has, sorted."""
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


def page_rows(
    model: Keyed, keys: Sequence[str], budget: int = PAGE_BUDGET
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Rows of `keys` in order until the next would pass `budget` bytes: (rows, keys the model
    lacks, keys left for the next page). A row alone bigger than the budget is never sent: the
    answer then has no rows and that key first among those left, and the caller must stop there."""
    rows: dict[str, Any] = {}
    missing: list[str] = []
    known = set(model.keys)
    used = 1  # with each row's ':' and ',' counted, the braces take one more
    for i, key in enumerate(keys):
        if key not in known:
            missing.append(key)
            continue
        row = model.row(key)
        # ASCII-escaped JSON is at least as long as its UTF-8: an upper bound of the bytes sent.
        size = len(canonical_json(key)) + len(canonical_json(row)) + 2
        if used + size > budget:
            return rows, missing, list(keys[i:])
        rows[key] = row
        used += size
    return rows, missing, []
