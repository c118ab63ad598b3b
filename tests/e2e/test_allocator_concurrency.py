"""Two allocators on one log: racing placements never over-commit a host, and a restart loses nothing."""

import asyncio
import collections
from typing import Any

import aiohttp
import pytest

from potluck.allocator.capacity import CapacityLedger
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.events import registry
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.projections import ReadModels
from tests.fixtures.pool import Pool
from tests.helpers import host_in_the_log

HOSTS = {"h-one": 2.0, "h-two": 3.0, "h-three": 4.0}
FACTS = EngineFacts(version="test", cgroup_version="1", storage_driver="overlay2", disk_quota_supported=False)


async def register_hosts_in_the_log(pool: Pool) -> None:
    """Hosts as the registry records them; no hostd runs, so placements stay `placed`."""
    pool.processes["registry"].stop()  # no liveness checks: these hosts never beat
    for host_id, cpus in HOSTS.items():
        donated = Capacity(cpus=cpus, memory_bytes=8 << 30, disk_bytes=8 << 30)
        await host_in_the_log(pool.store, host_id, donated, FACTS)


async def ledger_from_log(pool: Pool) -> CapacityLedger:
    ledger = CapacityLedger()
    for host_id in HOSTS:
        for record in await pool.store.read_stream(f"capacity-{host_id}"):
            ledger.apply(registry.decode_record(record), version=record.version)
    return ledger


@pytest.mark.slow
# The 200 requests come from one user at once: past any rate a real user's script would need.
@pytest.mark.change_rate(1000, 1000)
async def test_two_allocators_200_concurrent_requests_never_over_commit(pool: Pool) -> None:
    await register_hosts_in_the_log(pool)
    second = pool.start_allocator("allocator-2", relay=False)
    assert second.pid is not None
    await pool.wait_api()
    second_port = int(second.argv[second.argv.index("--listen") + 1].rsplit(":", 1)[1])
    await pool.wait_api(second_port)
    token = await pool.add_user("load", allocations=1000, cpus=1000.0, memory_bytes=1 << 50)
    bases = [pool.api, f"http://127.0.0.1:{second_port}"]
    headers = {"Authorization": f"Bearer {token}"}
    body = {"cpus": 0.25, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "queue_timeout": 600}
    outcomes: collections.Counter[str] = collections.Counter()

    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> dict[str, Any]:
            async with http.post(bases[i % 2] + "/v1/allocations", json=body, headers=headers) as response:
                answer: dict[str, Any] = await response.json()
                outcomes[str(response.status)] += 1
                assert response.status in (201, 202, 422, 503), answer
                return answer

        answers = await asyncio.gather(*(one(i) for i in range(200)))

    ledger = await ledger_from_log(pool)
    for host_id, cpus in HOSTS.items():
        assert ledger.reserved(host_id).cpus <= cpus + 1e-9, (host_id, ledger.reserved(host_id))
    placed = [a for a in answers if a.get("state") == "placed"]
    pending = [a for a in answers if a.get("state") == "pending"]
    assert len(placed) == int(sum(HOSTS.values()) / 0.25), outcomes
    assert len(placed) + len(pending) + outcomes["422"] + outcomes["503"] == 200
    assert len({a["id"] for a in placed + pending}) == len(placed) + len(pending)


async def test_two_allocators_never_let_one_user_pass_their_quota(pool: Pool) -> None:
    """A user allowed 3 allocations sends 40 requests at once, half to each replica. Each replica
    sees only its own requests in flight; the user's quota stream, appended with an expected
    version in every request's transaction, makes the other replica's decisions conflict and be
    taken again. Exactly 3 are accepted, 37 refused with QUOTA_EXCEEDED (none BUSY), and the
    log holds exactly 3 allocations of that user."""
    await register_hosts_in_the_log(pool)
    second = pool.start_allocator("allocator-2", relay=False)
    await pool.wait_api()
    second_port = int(second.argv[second.argv.index("--listen") + 1].rsplit(":", 1)[1])
    await pool.wait_api(second_port)
    token = await pool.add_user("erin", allocations=3, cpus=100.0)
    bases = [pool.api, f"http://127.0.0.1:{second_port}"]
    headers = {"Authorization": f"Bearer {token}"}
    # Only h-three could take one at all: most requests wait as pending, with no host's capacity
    # stream in their append that would serialise the replicas' decisions by chance.
    body = {"cpus": 4.0, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG}
    requests = 40
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=requests)) as http:

        async def one(i: int, method: str = "POST", path: str = "/v1/allocations") -> tuple[int, Any]:
            async with http.request(method, bases[i % 2] + path, json=body, headers=headers) as response:
                return response.status, await response.json()

        # Open every connection first, so that the requests reach both replicas together.
        await asyncio.gather(*(one(i, "GET") for i in range(requests)))
        answers = await asyncio.gather(*(one(i) for i in range(requests)))
    accepted = [a for status, a in answers if status in (201, 202)]
    refused = [a for status, a in answers if status == 403]
    assert (len(accepted), len(refused)) == (3, requests - 3), answers
    assert {a["error"]["code"] for a in refused} == {"QUOTA_EXCEEDED"}
    logged = await ReadModels.rebuild(pool.store)
    of_erin = [a.alloc_id for a in logged.allocations.allocations.values() if a.user == "erin"]
    assert sorted(of_erin) == sorted(a["id"] for a in accepted)


async def test_a_restarted_allocator_rebuilds_from_the_log_and_carries_on(pool: Pool) -> None:
    """SIGKILL the allocator between requests: after a restart every allocation is there once,
    with the same state, and new requests are placed on what is still free."""
    await register_hosts_in_the_log(pool)
    await pool.wait_api()
    token = await pool.add_user("dana", allocations=100, cpus=100.0)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"cpus": 1.0, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG}
    async with aiohttp.ClientSession() as http:

        async def create() -> dict[str, Any]:
            async with http.post(pool.api + "/v1/allocations", json=body, headers=headers) as response:
                result: dict[str, Any] = await response.json()
                return result

        async def listing() -> list[dict[str, Any]]:
            async with http.get(pool.api + "/v1/allocations", headers=headers) as response:
                result: list[dict[str, Any]] = (await response.json())["allocations"]
                return result

        first = [await create() for _ in range(5)]
        before = await listing()
        pool.processes["allocator"].kill()
        pool.start_allocator(port=pool.api_port)
        await pool.wait_api()
        after = await listing()
        assert after == before
        more = [await create() for _ in range(6)]
        final = await listing()
    ids = [a["id"] for a in final]
    assert len(ids) == len(set(ids)) == 11
    assert {a["id"] for a in first} <= set(ids)
    assert [a["state"] for a in more].count("placed") == 4  # 9 CPUs in all: 5 + 4 placed, 2 wait
    ledger = await ledger_from_log(pool)
    assert sum(ledger.reserved(h).cpus for h in HOSTS) == 9.0
