"""A service's answer to an operator's request for its read models, bounded whatever their size.

The allocator (ALLOCATOR_STATE) and the registry (LIST_HOSTS) answer these
requests, each with its own position in the log, so the answers of one
comparison can be checked to belong to one moment:

- `{}`: the position and each model's row count.
- `{"digests": true}`: also each model's bucket digests (digests.py).
- `{"bucket": {"model": M, "index": I, "buckets": B}}`: the digest of each row of bucket I of B.
- `{"rows": {"model": M, "keys": [...]}}`: those rows, as many as fit a page; the rest are `left`.
- `{"page": {"model": M, "after": KEY}}`: the rows after KEY in key order, one page; `next` is the
  last key sent when more follow.

Bad requests raise `BadStateRequest` with what to send instead.
"""

from collections.abc import Mapping
from typing import Any

from potluck.readmodels.digests import (
    MAX_BUCKETS,
    PAGE_BUDGET,
    Keyed,
    bucket_count,
    bucket_digests,
    bucket_digests_yielding,
    key_digests,
    page_rows,
)

__all__ = [
    "MAX_KEYS_PER_REQUEST",
    "BadStateRequest",
    "answer_state_request",
    "answer_state_request_yielding",
    "page_after",
]

#: Keys one `rows` request may name (some 40 KB of ids).
MAX_KEYS_PER_REQUEST = 1000


class BadStateRequest(ValueError):
    """A request for read models that cannot be answered; the message says what to send."""


def _model(models: Mapping[str, Keyed], body: Mapping[str, Any]) -> tuple[str, Keyed]:
    name = body.get("model")
    if not isinstance(name, str) or name not in models:
        raise BadStateRequest(f"unknown model {name!r}; this service has {', '.join(sorted(models))}")
    return name, models[name]


def page_after(
    model: Keyed, after: str | None, budget: int = PAGE_BUDGET
) -> tuple[dict[str, Any], str | None]:
    """The rows after `after` in key order, as many as fit `budget`; and the key to ask after next
    (None: the last page)."""
    keys = sorted(k for k in model.keys if after is None or k > after)
    rows, _missing, left = page_rows(model, keys, budget)
    if left and not rows:
        raise BadStateRequest(f"the row {left[0]!r} alone is bigger than a page ({budget} bytes)")
    return rows, (next(reversed(rows)) if left else None)


def answer_state_request(request: Mapping[str, Any], models: Mapping[str, Keyed]) -> dict[str, Any]:
    """The answer to `request` (without the position, which the caller adds)."""
    if "bucket" in request:
        body = request["bucket"]
        name, model = _model(models, body)
        buckets, index = body.get("buckets"), body.get("index")
        if not (isinstance(buckets, int) and 1 <= buckets <= MAX_BUCKETS):
            raise BadStateRequest(f"buckets must be a number from 1 to {MAX_BUCKETS}, not {buckets!r}")
        if not (isinstance(index, int) and 0 <= index < buckets):
            raise BadStateRequest(f"index must be a number from 0 to {buckets - 1}, not {index!r}")
        return {"model": name, "keys": key_digests(model, index, buckets)}
    if "rows" in request:
        body = request["rows"]
        name, model = _model(models, body)
        keys = body.get("keys")
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise BadStateRequest("rows.keys must be a list of keys")
        if len(keys) > MAX_KEYS_PER_REQUEST:
            raise BadStateRequest(f"ask for at most {MAX_KEYS_PER_REQUEST} keys at a time, not {len(keys)}")
        rows, missing, left = page_rows(model, keys)
        if left and not rows:
            raise BadStateRequest(f"the row {left[0]!r} alone is bigger than a page ({PAGE_BUDGET} bytes)")
        return {"model": name, "rows": rows, "missing": missing, "left": left}
    if "page" in request:
        body = request["page"]
        name, model = _model(models, body)
        after = body.get("after")
        if after is not None and not isinstance(after, str):
            raise BadStateRequest(f"page.after must be a key or null, not {after!r}")
        rows, next_key = page_after(model, after)
        return {"model": name, "rows": rows, "next": next_key}
    with_digests = bool(request.get("digests"))
    out: dict[str, Any] = {}
    for name, model in models.items():
        summary: dict[str, Any] = {"count": len(model.keys)}
        if with_digests:
            buckets = bucket_count(len(model.keys))
            summary["buckets"] = buckets
            summary["digests"] = bucket_digests(model, buckets)
        out[name] = summary
    return {"models": out}


async def answer_state_request_yielding(
    request: Mapping[str, Any], models: Mapping[str, Keyed]
) -> dict[str, Any]:
    """`answer_state_request`, letting the event loop run while digesting every row (`models` must
    be a snapshot that does not change meanwhile)."""
    if not request.get("digests") or any(k in request for k in ("bucket", "rows", "page")):
        return answer_state_request(request, models)
    out: dict[str, Any] = {}
    for name, model in models.items():
        buckets = bucket_count(len(model.keys))
        digests = await bucket_digests_yielding(model, buckets)
        out[name] = {"count": len(model.keys), "buckets": buckets, "digests": digests}
    return {"models": out}
