"""A page of a user's list in the HTTP API: `?limit=N&after=ID`, answered with `next`.

`GET /v1/allocations` and `GET /v1/jobs` answer at most `limit` rows (100 unless asked, at most
1000), oldest first; `next` is the id to send as `after` for the following page, null on the
last. The cursor is the id of a row of the caller's own list (readmodels/owner_index.py keeps
each user's rows in order), so rows created meanwhile come after, on later pages. Any other
`after`, another user's id as much as one that never existed, gets the same 404, as the
caller's own row of that id would if it did not exist: the answer does not tell whether
someone else's id exists. (A 404 rather than a 400: the query is well formed, the row it
names is not found; the OpenAPI fuzzer's valid-data check counts a 400 for a well-formed
query as a defect, which keeps it strict on `limit`.)
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from potluck.kernel.rejections import Rejected

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "PageQuery", "page_query"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Plain digits only: int() would also take "+5", " 5" and "5_0", which the schema's integer is not.
_DIGITS = re.compile(r"[0-9]{1,7}")


@dataclass(frozen=True)
class PageQuery:
    limit: int
    after: str | None


def page_query(query: Mapping[str, str], owns: Callable[[str], bool], what: str) -> PageQuery:
    """`limit` and `after` from the query, checked; `owns(id)`: whether the id is one of the
    caller's own `what` (allocations, jobs)."""
    raw = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        limit = int(raw) if _DIGITS.fullmatch(raw) else 0
        if not 1 <= limit <= MAX_LIMIT:
            raise Rejected.invalid_field(
                "limit", f"limit must be a whole number from 1 to {MAX_LIMIT} (rows per page)"
            )
    after = query.get("after")
    if after is not None and not owns(after):
        raise Rejected(
            "NOT_FOUND",
            f"after must be the `next` of a page of your {what}: none of yours has this id",
            field="after",
            status=404,
        )
    return PageQuery(limit=limit, after=after)
