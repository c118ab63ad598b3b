"""`potluck ops replay --check` on a pool whose log holds 100,000 allocations.

The allocator's whole state is then some 100 MB of JSON, a hundred times NATS'
max payload: the check must compare by digests and fetch only what differs.
The log is loaded in bulk (COPY) before the real registry and allocator start;
then one allocation's past event is rewritten in Postgres behind the running
allocator's back, and the check must name that allocation and nothing else.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest

from potluck.contracts.allocation_events import AllocationRefused, AllocationRequested, alloc_stream
from potluck.contracts.host_events import HostEnrolled, host_stream
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import ALLOCATOR_STATE, LIST_HOSTS
from potluck.events import EventStore, StreamAppend
from tests.e2e.conftest import ops
from tests.fixtures.pool import Pool, spec

ALLOCATIONS = 100_000
#: Enrolled hosts: their rows take more than NATS' max payload, so the registry's list is paged.
HOSTS = 3_000
#: Streams per append: one COPY of 2,000 events.
BATCH = 1000


def alloc_id(i: int) -> str:
    return f"a-{i:012x}"


async def load_allocations(store: EventStore, count: int) -> None:
    """`count` allocations, each requested and refused (a terminal state: nothing to react to)."""
    wanted = spec()
    for start in range(0, count, BATCH):
        await store.append_streams(
            [
                StreamAppend(
                    alloc_stream(alloc_id(i)),
                    [
                        AllocationRequested(alloc_id=alloc_id(i), user="load", spec=wanted, lifetime_s=60),
                        AllocationRefused(alloc_id=alloc_id(i), reason="QUEUE_TIMEOUT"),
                    ],
                    expected_version=0,
                )
                for i in range(start, min(start + BATCH, count))
            ]
        )


async def load_hosts(store: EventStore, count: int) -> list[str]:
    """`count` machines enrolled (not yet registered: no heartbeats expected of them)."""
    ids = [f"h-{i:012x}" for i in range(count)]
    for start in range(0, count, BATCH):
        await store.append_streams(
            [
                StreamAppend(
                    host_stream(h),
                    [HostEnrolled(host_id=h, name=f"m{h}", nkey="U" + "A" * 55)],
                    expected_version=0,
                )
                for h in ids[start : start + BATCH]
            ]
        )
    return ids


async def listed_hosts(pool: Pool) -> tuple[list[str], int]:
    """Every host id the registry lists, following `next` page by page; and how many pages."""
    nc = await pool.client()
    try:
        ids: list[str] = []
        request: dict[str, str] = {}
        pages = 0
        while True:
            msg = await nc.request(LIST_HOSTS, json.dumps(request).encode(), timeout=10)
            reply = Reply.model_validate_json(msg.data)
            assert reply.ok, reply.error
            pages += 1
            ids.extend(h["host_id"] for h in reply.data["hosts"])
            if reply.data["next"] is None:
                return ids, pages
            request = {"after": reply.data["next"]}
    finally:
        await nc.close()


async def caught_up(pool: Pool, subject: str, head: int, timeout: float = 120) -> None:
    """Until the service on `subject` answers at the log's head."""
    nc = await pool.client()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reply = Reply.model_validate_json((await nc.request(subject, b"{}", timeout=10)).data)
                if reply.ok and reply.data["position"] >= head:
                    return
            except (TimeoutError, nats.errors.NoRespondersError):
                pass  # still starting or loading the log
            assert asyncio.get_running_loop().time() < deadline, f"{subject} not at {head}\n" + pool.logs()
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


@pytest.fixture
async def loaded_pool(tmp_path: Path, database_url: str) -> AsyncIterator[Pool]:
    pool = await Pool.create(tmp_path, database_url, log_level="INFO")
    try:
        await load_hosts(pool.store, HOSTS)
        await load_allocations(pool.store, ALLOCATIONS)
        head = await pool.store.head_position()
        pool.start_registry()
        pool.start_allocator()
        await caught_up(pool, LIST_HOSTS, head)
        await caught_up(pool, ALLOCATOR_STATE, head)
        yield pool
    finally:
        await pool.close()


async def check(pool: Pool) -> tuple[int, str, str]:
    return await ops(
        "replay",
        "--check",
        "--json",
        "--quiet",
        "--database-url",
        pool.database_url,
        "--nats-url",
        pool.nats.url,
        "--nats-seed-file",
        str(pool.services_seed_file),
        "--timeout",
        "30",
        timeout=120,
    )


# Loading 100,000 allocations and checking twice took 144 s in CI and 175 s on a slower day
# here, against the suite's default of 180 s per test (set-up included).
@pytest.mark.timeout(600)
async def test_replay_check_compares_100k_allocations_and_names_the_one_that_differs(
    loaded_pool: Pool,
) -> None:
    """100,000 allocations in the log, the real services caught up: the check agrees (exit 0)
    though no service could send its models in one message; the registry lists its 3,000
    hosts page by page; and `status --live` shows them
    counted. Then one allocation's refusal is
    rewritten in the log behind the allocator's back: the check fails (exit 1) naming that
    allocation's field, with both values, and no other difference."""
    pool = loaded_pool
    code, out, err = await check(pool)
    assert code == 0, out + err + pool.logs()
    report = json.loads(out)
    assert {c["service"]: c["differences"] for c in report["comparisons"]} == {
        "registry": [],
        "allocator": [],
    }
    allocator = next(c for c in report["comparisons"] if c["service"] == "allocator")
    assert allocator["compared"]["allocations"] == ALLOCATIONS
    registry = next(c for c in report["comparisons"] if c["service"] == "registry")
    assert registry["compared"]["hosts"] == HOSTS

    # The registry's list, too big for one message, comes in pages that together hold every host.
    ids, pages = await listed_hosts(pool)
    assert sorted(ids) == [f"h-{i:012x}" for i in range(HOSTS)]
    assert pages > 1

    # The status screen at the same scale, asking the services what they skipped: counts, not rows.
    code, out, err = await ops(
        "status",
        "--live",
        "--database-url",
        pool.database_url,
        "--nats-url",
        pool.nats.url,
        "--nats-seed-file",
        str(pool.services_seed_file),
        "--timeout",
        "30",
        timeout=120,
    )
    assert code == 0, out + err
    assert f"Allocations by state: refused {ALLOCATIONS}" in out, out

    victim = alloc_id(ALLOCATIONS // 2)
    rewritten = await pool.store.pool.execute(
        "UPDATE events SET data = jsonb_set(data, '{reason}', '\"NO_HOST_COULD_EVER_FIT\"') "
        "WHERE stream = $1 AND type = 'AllocationRefused'",
        alloc_stream(victim),
    )
    assert rewritten == "UPDATE 1"

    code, out, err = await check(pool)
    assert code == 1, out + err
    report = json.loads(out)
    found = {c["service"]: c["differences"] for c in report["comparisons"]}
    assert found["registry"] == []
    assert found["allocator"] == [
        f'allocations.{victim}.reason: replay "NO_HOST_COULD_EVER_FIT", live "QUEUE_TIMEOUT"'
    ]
