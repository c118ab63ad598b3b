"""One policy for an event a service cannot read, the same in every service, on real processes.

A newer writer may log an event type this version does not know, or data it
cannot validate. Each service's Fold skips such an event: it is counted, logged
with its position and type, shown by `potluck ops status`, and the service keeps
serving. The event still took a version of its stream, so decisions on that
stream (a placement on the host, a release of the allocation) still succeed.
"""

import json
from typing import Any

import aiohttp
import asyncpg

from potluck.contracts.allocation_events import alloc_stream, capacity_stream
from potluck.contracts.host_events import host_stream
from potluck.contracts.messages import Reply
from potluck.contracts.subjects import ALLOCATOR_STATE
from tests.e2e.conftest import Gatewayed, ops


async def append_unreadable(
    database_url: str, stream: str, type_name: str, data: dict[str, Any], routing_key: str | None = None
) -> int:
    """Log an event as a newer writer would, under the store's table lock; returns its position."""
    metadata = {"routing_key": routing_key} if routing_key else {}
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            position = await conn.fetchval(
                "INSERT INTO events (event_id, stream, version, type, schema_version, data, metadata) "
                "SELECT gen_random_uuid(), $1::text, coalesce(max(version), 0) + 1, $2, 1, "
                "$3::jsonb, $4::jsonb FROM events WHERE stream = $1::text RETURNING position",
                stream,
                type_name,
                json.dumps(data),
                json.dumps(metadata),
            )
    finally:
        await conn.close()
    return int(position)


async def test_an_unreadable_event_is_skipped_counted_shown_and_every_service_keeps_serving(
    gatewayed: Gatewayed,
) -> None:
    """What is tried: with an allocation running, events this version cannot read are logged on
    the host's stream (an unknown type, routed to its hostd too), its capacity stream (a known type
    with data missing a field), the allocation's stream and the user's stream (unknown types).
    What must hold: the registry answers and counts what it skipped; the allocator places a new
    allocation on that same host, releases the old one (the skipped events' versions were counted)
    and counts what it skipped; hostd starts the new container; the gateway carries the user into
    it (it folded past them); `potluck ops status` lists every skipped event with its position."""
    pool = gatewayed.pool
    host_id = gatewayed.host.host_id
    async with aiohttp.ClientSession() as http:
        first = await gatewayed.allocate(http)

        positions = [
            await append_unreadable(
                pool.database_url, host_stream(host_id), "HostTeleported", {"host_id": host_id}, host_id
            ),
            await append_unreadable(
                pool.database_url,
                capacity_stream(host_id),
                "CapacityReserved",
                {"host_id": host_id, "alloc_id": "a-from-the-future"},
            ),
            await append_unreadable(
                pool.database_url, alloc_stream(first), "AllocationTeleported", {"alloc_id": first}
            ),
            await append_unreadable(pool.database_url, "user-alice", "UserPromoted", {"user": "alice"}),
        ]

        second = await gatewayed.allocate(http)
        headers = {"Authorization": f"Bearer {gatewayed.token}"}
        async with http.get(f"{pool.api}/v1/allocations/{second}", headers=headers) as r:
            assert (await r.json())["host_id"] == host_id
        async with http.delete(f"{pool.api}/v1/allocations/{first}", headers=headers) as r:
            released = await r.json()
            assert r.status == 200, released
        assert released["state"] == "released", released

    session = await gatewayed.ssh(second, "echo still here")
    assert session.returncode == 0, session.stderr + pool.logs()
    assert session.stdout == "still here\n"

    registry = await pool.live_hosts()
    assert registry["position"] >= positions[-1]
    assert registry["skipped"]["count"] == 1, registry["skipped"]
    assert host_id in {h["host_id"] for h in registry["hosts"]}

    nc = await pool.client()
    try:
        reply = Reply.model_validate_json((await nc.request(ALLOCATOR_STATE, b"{}", timeout=10)).data)
    finally:
        await nc.close()
    assert reply.ok, reply.error
    assert reply.data["skipped"]["count"] == 4, reply.data["skipped"]
    assert sorted(s["position"] for s in reply.data["skipped"]["recent"]) == positions

    code, out, err = await ops("status", "--json", "--database-url", pool.database_url)
    assert code == 0, err
    unreadable = json.loads(out)["unreadable"]
    assert unreadable["count"] == 4, unreadable
    assert [(e["position"], e["type"]) for e in unreadable["events"]] == list(
        zip(
            positions,
            ["HostTeleported", "CapacityReserved", "AllocationTeleported", "UserPromoted"],
            strict=True,
        )
    )
