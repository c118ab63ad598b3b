"""Members donate machines: registry and hostd processes on real NATS, Postgres and Docker engines."""

from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import wait_for_status
from tests.fixtures.pool import Pool, place, spec


async def test_two_hostds_register_with_their_caps(pool: Pool, docker_engines: list[DockerEngine]) -> None:
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    pool.write_config(a, docker_engines[0], donate={"cpus": 1.5, "memory": "1G", "disk": "2G"})
    pool.write_config(b, docker_engines[1], donate={"cpus": 1, "memory": "512M", "disk": "1G"})
    pool.start_hostd(a)
    pool.start_hostd(b)
    await pool.wait_for_host(a.host_id, "active")
    await pool.wait_for_host(b.host_id, "active")
    view = await pool.hosts()
    donated_a = view.hosts[a.host_id].donated
    donated_b = view.hosts[b.host_id].donated
    assert donated_a is not None
    assert donated_b is not None
    assert (donated_a.cpus, donated_a.memory_bytes, donated_a.disk_bytes) == (1.5, 1 << 30, 2 << 30)
    assert (donated_b.cpus, donated_b.memory_bytes) == (1, 512 << 20)
    assert view.hosts[a.host_id].labels == {"name": "laptop-a"}
    assert view.hosts[a.host_id].engine is not None


async def test_a_placed_container_runs_and_is_reported(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    a = await pool.enroll("laptop-a")
    pool.write_config(a, docker_engines[0])
    pool.start_hostd(a)
    await pool.wait_for_host(a.host_id, "active")
    await place(pool.store, a.host_id, "run1", spec())
    await wait_for_status(pool, "run1", "running")
