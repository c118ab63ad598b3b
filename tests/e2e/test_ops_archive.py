"""`potluck ops archive` on a real pool: old events leave the hot table, and the pool neither
notices nor forgets.

A user makes allocations on a real host and releases most of them; the operator archives
the log (as the real `potluck ops archive` process). Afterwards `potluck ops replay --check`
still agrees with the running services, an allocator restarted over the archived log folds
the same state, and a new allocation (appending to the host's capacity stream, whose early
events are archived) is placed and runs.
"""

import aiohttp

from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import ops, replay_agrees, wait_for_status
from tests.e2e.test_ops import User, allocator_now
from tests.fixtures.pool import EnrolledHost, Pool


async def test_archive_then_replay_agrees_and_a_restarted_allocator_folds_the_same_state(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Tried: 4 allocations, 3 released; bad archive input; a dry run; the archive; an
    allocator restart; one more allocation. Must hold: bad input moves nothing and says why;
    the dry run moves nothing; the archive moves events (each stream's last one stays);
    replay --check agrees before and after the restart; the restarted allocator's models
    equal those before the archive; the new allocation runs."""
    db = ("--database-url", pool.database_url)
    await pool.wait_api()
    async with aiohttp.ClientSession() as http:
        alice = User(http, pool, await pool.add_user("alice"))
        made = [await alice.allocate(0.25) for _ in range(4)]
        for alloc_id in made:
            await wait_for_status(pool, alloc_id, "running")
        for alloc_id in made[:3]:
            await alice.call("DELETE", f"/v1/allocations/{alloc_id}")
        for alloc_id in made[:3]:
            await wait_for_status(pool, alloc_id, "released")

        before = await allocator_now(pool)
        head = await pool.store.head_position()
        archived = "SELECT count(*) FROM events_archive"

        for args, words in [
            (("--older-than", "-5m"), "cannot be negative"),
            (("--before", "1", "--keep-recent", "-1d"), "cannot be negative"),
            (("--before", str(head + 10)), "past the end of the log"),
            ((), "say what to archive"),
        ]:
            code, out, err = await ops("archive", *args, *db)
            assert (code, out) == (1, ""), err
            assert err.startswith("error: ")
            assert words in err
        # By default what a stream may still redeliver stays: every event here is minutes old.
        code, out, err = await ops("archive", "--before", str(head + 1), "--dry-run", *db)
        assert code == 0, err
        assert out.startswith("Would archive 0 events"), out
        assert "redeliver" in out
        recent = ("--before", str(head + 1), "--keep-recent", "0s")
        code, out, err = await ops("archive", *recent, "--dry-run", *db)
        assert code == 0, err
        assert out.startswith("Would archive ")
        assert not out.startswith("Would archive 0 ")
        assert await pool.store.pool.fetchval(archived) == 0

        code, out, err = await ops("archive", *recent, "--batch-size", "7", *db)
        assert code == 0, err
        assert out.startswith("Archived ")
        moved = await pool.store.pool.fetchval(archived)
        assert moved > 0
        assert f"Archived {moved} events" in out
        streams = await pool.store.pool.fetchval("SELECT count(DISTINCT stream) FROM all_events")
        assert await pool.store.pool.fetchval("SELECT count(DISTINCT stream) FROM events") == streams

        await replay_agrees(pool)

        pool.processes["allocator"].stop()
        pool.start_allocator(port=pool.api_port)
        await pool.wait_api()
        after = await allocator_now(pool)
        assert after.position >= before.position
        assert after.models["allocations"] == before.models["allocations"]
        assert after.models["capacity"] == before.models["capacity"]
        assert after.models["hosts"] == before.models["hosts"]

        fifth = await alice.allocate(0.25)
        await wait_for_status(pool, fifth, "running")
    await replay_agrees(pool)
