"""Each owner's rows in the order they were asked for, kept as they are folded. Pure.

A user's list (`GET /v1/allocations`, `GET /v1/jobs`, the web page) then reads that user's
rows alone instead of scanning, and sorting, every row of every user. A row is keyed by when it
was asked for and its id: the order the lists have always had (oldest first, ties by id). Only
ids are kept: the row itself stays in its view, so nothing is recorded twice.

A page ends after `limit` rows; its last id is the cursor of the next (`after`). A cursor is a
place in the order, not a count, so rows added meanwhile (asked for later) come on later pages
and none is shown twice or skipped.
"""

import heapq
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["EARLIEST", "OwnerIndex"]

#: The key of a row with no time (an allocation placed without a request): before every other.
EARLIEST = datetime.min.replace(tzinfo=UTC)

_Key = tuple[datetime, str]


@dataclass
class OwnerIndex:
    #: Each owner's keys, in order.
    rows: dict[str, list[_Key]] = field(default_factory=dict)
    #: Where each row is: its owner and its key (to move it, should either change).
    placed: dict[str, tuple[str, _Key]] = field(default_factory=dict)

    def put(self, owner: str, at: datetime | None, row_id: str) -> None:
        """The row belongs to `owner`, asked for `at`: added, or moved if it was elsewhere."""
        where = (owner, (at or EARLIEST, row_id))
        old = self.placed.get(row_id)
        if old == where:
            return
        if old is not None:
            keys = self.rows[old[0]]
            del keys[bisect_right(keys, old[1]) - 1]
        # Rows are folded in the order they are asked for: insort appends, the common case.
        insort(self.rows.setdefault(owner, []), where[1])
        self.placed[row_id] = where

    def remove(self, row_id: str) -> None:
        """The row is no longer listed (nothing, when it never was)."""
        old = self.placed.pop(row_id, None)
        if old is None:
            return
        keys = self.rows[old[0]]
        del keys[bisect_right(keys, old[1]) - 1]
        if not keys:
            del self.rows[old[0]]

    def owns(self, owner: str, row_id: str) -> bool:
        where = self.placed.get(row_id)
        return where is not None and where[0] == owner

    def ids(self, owner: str) -> Iterator[str]:
        """The owner's ids, oldest first."""
        return (row_id for _, row_id in self.rows.get(owner, ()))

    def newest_first(self, owner: str) -> Iterator[str]:
        """The owner's ids, newest first."""
        return (row_id for _, row_id in reversed(self.rows.get(owner, ())))

    def everyones_newest_first(self) -> Iterator[str]:
        """Every owner's ids, newest first: the owners' orders merged, so that the first few cost
        the number of owners, not the number of rows."""
        merged = heapq.merge(*(reversed(keys) for keys in self.rows.values()), reverse=True)
        return (row_id for _, row_id in merged)

    def count(self, owner: str) -> int:
        return len(self.rows.get(owner, ()))

    def page(
        self,
        owner: str,
        after: str | None,
        limit: int,
        keep: Callable[[str], bool] = lambda _: True,
        *,
        after_key: tuple[datetime | None, str] | None = None,
    ) -> tuple[list[str], str | None]:
        """Up to `limit` of the owner's ids that `keep`, after the row `after` (None: from the
        first); and the cursor of the next page (None: this is the last). `after` must be one of
        the owner's (`owns`); or `after_key` (when asked for, its id) places a row no longer
        listed (`remove`d), whose place in the order is still known."""
        assert limit >= 1, "a page holds at least one row"
        keys = self.rows.get(owner, [])
        start = 0
        if after_key is not None:
            start = bisect_right(keys, (after_key[0] or EARLIEST, after_key[1]))
        elif after is not None:
            where = self.placed[after]
            assert where[0] == owner, "a cursor of another owner's row"
            start = bisect_right(keys, where[1])
        found: list[str] = []
        for index in range(start, len(keys)):
            row_id = keys[index][1]
            if keep(row_id):
                if len(found) == limit:
                    return found, found[-1]
                found.append(row_id)
        return found, None

    @classmethod
    def of(cls, rows: Iterable[tuple[str, datetime | None, str]]) -> "OwnerIndex":
        """The index of (owner, asked at, id) rows."""
        index = cls()
        for owner, at, row_id in rows:
            index.put(owner, at, row_id)
        return index
