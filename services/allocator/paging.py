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

A job's tasks (`GET /v1/jobs/{id}/tasks`) come in pages the same way, by index: `after` is
the index of the previous page's last task (`next`), a whole number, and one that is not a
task of the job (past its last) is a 404 as an unknown id is.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from potluck.contracts.job_events import MAX_TASKS
from potluck.kernel.rejections import Rejected

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "PageQuery", "TaskPageQuery", "page_query", "task_page_query"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Plain digits only: int() would also take "+5", " 5" and "5_0", which the schema's integer is not.
_DIGITS = re.compile(r"[0-9]{1,7}")


@dataclass(frozen=True)
class PageQuery:
    limit: int
    after: str | None


@dataclass(frozen=True)
class TaskPageQuery:
    limit: int
    #: The index of the task the page starts after.
    after: int | None


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        limit = int(raw) if _DIGITS.fullmatch(raw) else 0
        if not 1 <= limit <= MAX_LIMIT:
            raise Rejected.invalid_field(
                "limit", f"limit must be a whole number from 1 to {MAX_LIMIT} (rows per page)"
            )
    return limit


def page_query(query: Mapping[str, str], owns: Callable[[str], bool], what: str) -> PageQuery:
    """`limit` and `after` from the query, checked; `owns(id)`: whether the id is one of the
    caller's own `what` (allocations, jobs)."""
    limit = _limit(query)
    after = query.get("after")
    if after is not None and not owns(after):
        raise _after_unknown(f"your {what}: none of yours has this id")
    return PageQuery(limit=limit, after=after)


def task_page_query(query: Mapping[str, str], tasks: int) -> TaskPageQuery:
    """`limit` and `after` from the query of a page of a job of `tasks` tasks, checked."""
    limit = _limit(query)
    raw = query.get("after")
    if raw is None:
        return TaskPageQuery(limit=limit, after=None)
    after = int(raw) if _DIGITS.fullmatch(raw) else MAX_TASKS
    if after >= MAX_TASKS:
        raise Rejected.invalid_field(
            "after", f"after must be a task's index, a whole number from 0 to {MAX_TASKS - 1}"
        )
    if after >= tasks:
        raise _after_unknown(f"this job's tasks: it has {tasks} (0 to {tasks - 1})")
    return TaskPageQuery(limit=limit, after=after)


def _after_unknown(of_what: str) -> Rejected:
    """`after` names nothing a page of `of_what` could have ended with: a 404, as a missing id."""
    said = f"after must be the `next` of a page of {of_what}"
    return Rejected("NOT_FOUND", said, field="after", status=404)
