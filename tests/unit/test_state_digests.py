"""Digests and pages of read models (potluck.readmodels.digests, state_pages) and the comparison
`replay --check` makes with them (potluck.ops.replay._compare)."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.ops.live import LiveModel, MemorySource
from potluck.ops.replay import NAMED_KEYS, SHOWN_ROWS, _compare
from potluck.readmodels.digests import (
    MAX_BUCKETS,
    PAGE_BUDGET,
    bucket_count,
    bucket_digests,
    bucket_digests_yielding,
    canonical_json,
    differing_buckets,
    differing_keys,
    key_digests,
    keyed,
)
from potluck.readmodels.state_pages import (
    MAX_KEYS_PER_REQUEST,
    BadStateRequest,
    answer_state_request,
    page_after,
)

keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
models = st.dictionaries(keys, values, max_size=60)


def found_by_digests(mine: dict[str, Any], theirs: dict[str, Any], buckets: int) -> list[str]:
    """What the check does: buckets whose digests differ, then rows whose digests differ in them."""
    a, b = keyed(mine), keyed(theirs)
    out: list[str] = []
    for index in differing_buckets(bucket_digests(a, buckets), bucket_digests(b, buckets)):
        out.extend(differing_keys(key_digests(a, index, buckets), key_digests(b, index, buckets)))
    return sorted(out)


@given(models, models, st.sampled_from([1, 2, 8, 64]))
def test_digests_find_exactly_the_keys_that_differ(
    a: dict[str, Any], b: dict[str, Any], buckets: int
) -> None:
    """Two models of any content, compared through bucket and row digests alone: the keys found
    are exactly those one side lacks or whose rows differ."""
    expected = sorted(k for k in set(a) | set(b) if k not in a or k not in b or a[k] != b[k])
    assert found_by_digests(a, b, buckets) == expected


@given(models, st.data())
def test_one_changed_row_changes_one_bucket(a: dict[str, Any], data: st.DataObject) -> None:
    """Changing one row (or adding one key) changes that key's bucket's digest and no other:
    keys are bucketed by hash, not by their place in the sorted order."""
    b = dict(a)
    key = data.draw(keys)
    b[key] = ["changed", a.get(key)]
    buckets = 16
    assert len(differing_buckets(bucket_digests(keyed(a), buckets), bucket_digests(keyed(b), buckets))) == 1


def all_pages(rows: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    pages = []
    after: str | None = None
    while True:
        page, after = page_after(keyed(rows), after, budget)
        pages.append(page)
        if after is None:
            return pages


@settings(max_examples=50)
@given(models, st.integers(min_value=200, max_value=2000))
def test_pages_give_every_row_once_in_order_within_the_budget(rows: dict[str, Any], budget: int) -> None:
    """Paging a model with `after` returns every row exactly once, in key order, and no page
    is bigger than the budget (a row alone bigger than a page is refused with a reason)."""
    biggest = max((len(canonical_json({k: v})) for k, v in rows.items()), default=0)
    if biggest > budget:
        with pytest.raises(BadStateRequest, match="bigger than a page"):
            all_pages(rows, budget)
        return
    pages = all_pages(rows, budget)
    assert all(len(canonical_json(page)) <= budget for page in pages)
    assert all(pages) or not rows
    assert [key for page in pages for key in page] == sorted(rows)


def test_every_answer_stays_under_nats_payload_with_100k_rows() -> None:
    """A model of 100,000 rows of some 1 KB (100 MB in all): the summary with digests, a bucket's
    row digests and a page of rows each take well under NATS' 1 MB max payload."""
    row = {"note": "x" * 1000}
    model = keyed({f"a-{i:012x}": row for i in range(100_000)})
    summary = answer_state_request({"digests": True}, {"allocations": model})
    buckets = summary["models"]["allocations"]["buckets"]
    assert summary["models"]["allocations"]["count"] == 100_000
    bucket = answer_state_request(
        {"bucket": {"model": "allocations", "index": 7, "buckets": buckets}}, {"allocations": model}
    )
    page = answer_state_request({"page": {"model": "allocations", "after": None}}, {"allocations": model})
    for answer in (summary, bucket, page):
        assert len(json.dumps(answer)) < 512 * 1024
    assert page["next"] is not None
    assert len(canonical_json(page["rows"])) <= PAGE_BUDGET


def test_bucket_count_grows_with_the_model_up_to_a_bound() -> None:
    """Buckets: a power of two, one for a small model, more for a larger, never past the bound."""
    assert bucket_count(0) == 1
    assert bucket_count(100_000) == 256
    assert bucket_count(10**9) == MAX_BUCKETS


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (
            {"bucket": {"model": "nope", "index": 0, "buckets": 1}},
            "unknown model 'nope'; this service has hosts",
        ),
        ({"bucket": {"model": "hosts", "index": 4, "buckets": 4}}, "index must be a number from 0 to 3"),
        ({"bucket": {"model": "hosts", "index": 0, "buckets": 0}}, "buckets must be a number from 1"),
        ({"rows": {"model": "hosts", "keys": "h-1"}}, "rows.keys must be a list of keys"),
        (
            {"rows": {"model": "hosts", "keys": ["h"] * (MAX_KEYS_PER_REQUEST + 1)}},
            f"ask for at most {MAX_KEYS_PER_REQUEST} keys",
        ),
        ({"page": {"model": "hosts", "after": 3}}, "page.after must be a key or null"),
    ],
)
def test_bad_requests_are_refused_saying_what_to_send(request_: dict[str, Any], says: str) -> None:
    """Each malformed request is refused with a message that says what would be accepted."""
    with pytest.raises(BadStateRequest, match=says.replace("(", r"\(")):
        answer_state_request(request_, {"hosts": keyed({"h-1": {}})})


async def test_compare_shows_the_first_rows_and_names_the_rest() -> None:
    """More rows differ than are shown field by field: the first SHOWN_ROWS are shown with both
    values, a key only the replay has is said so, and the rest are named in one line."""
    replayed = {f"a-{i:04d}": {"status": "running"} for i in range(SHOWN_ROWS + 10)}
    live = {k: {"status": "exited"} for k in replayed}
    del live["a-0000"]
    source = MemorySource(LiveModel("allocator", 7, {"allocations": live}))
    compared, found = await _compare(source, await source.summary(), {"allocations": replayed})
    assert compared == {"allocations": SHOWN_ROWS + 9}
    assert found[0].startswith("allocations.a-0000: only in the replay")
    assert found[1] == 'allocations.a-0001.status: replay "running", live "exited"'
    assert len(found) == SHOWN_ROWS + 1
    assert found[-1] == "allocations: 10 more rows differ: " + ", ".join(
        f"a-{i:04d}" for i in range(SHOWN_ROWS, SHOWN_ROWS + 10)
    )


async def test_a_model_that_differs_throughout_is_not_fetched_whole() -> None:
    """Every one of 20,000 rows differs: the comparison stops asking for buckets once it has
    enough rows to show and name, and says how many buckets it left unexamined."""
    replayed = {f"a-{i:05d}": {"status": "running"} for i in range(20_000)}
    live = {k: {"status": "exited"} for k in replayed}
    source = MemorySource(LiveModel("allocator", 7, {"allocations": live}))
    summary = await source.summary()
    asked: list[int] = []
    bucket = source.bucket

    async def counted(model: str, index: int, buckets: int, *, at: int) -> dict[str, str]:
        asked.append(index)
        return await bucket(model, index, buckets, at=at)

    source.bucket = counted  # type: ignore[method-assign]
    _compared, found = await _compare(source, summary, {"allocations": replayed})
    buckets = summary.models["allocations"].buckets
    assert len(asked) < buckets
    assert found[-1] == (
        f"allocations: and more in {buckets - len(asked)} of {buckets} buckets of rows not examined "
        "(20000 rows live, 20000 replayed)"
    )
    assert len(found) == SHOWN_ROWS + 2
    assert found[-2].endswith(", ...")
    assert NAMED_KEYS < 20_000


@given(models, st.sampled_from([1, 4, 32]))
async def test_digests_while_yielding_are_the_same_digests(rows: dict[str, Any], buckets: int) -> None:
    """The digests a service computes letting its loop run equal those computed at once."""
    model = keyed(rows)
    assert await bucket_digests_yielding(model, buckets, every=3) == bucket_digests(model, buckets)
