"""schemathesis against /v1/openapi.json, every check and every phase (stateful too), on a real pool."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.pool import Pool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
async def test_schemathesis_finds_nothing_with_every_check_and_phase(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """What is tried: schemathesis with every check (schemathesis.toml enables them all but
    use_after_free, each exception with its reason) and its examples, coverage, fuzzing and
    stateful phases, 500 examples per operation (POTLUCK_FUZZ_EXAMPLES=N for more). What
    must hold: no failure and no error.

    The one host takes any image but is full (one allocation of another user holds all it
    donates), so the fuzzer's valid requests queue as pending (or are impossible, 422) instead
    of each starting a container."""
    host = await pool.enroll("laptop-a")
    pool.write_config(host, docker_engines[0], allowed_images=[])  # none listed: any image
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    await pool.wait_api()
    # The pool's image registry runs too, so GET /v1/images answers from it; the filler's image
    # is in its library, since the host runs no image of its member's it did not pull.
    await asyncio.to_thread(pool.publish_in_library, docker_engines[0])
    filler = await pool.add_user("filler")
    body = {"cpus": 2, "memory": "2G", "disk": "4G", "image": DEFAULT_TAG, "command": ["sleep", "3600"]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{pool.api}/v1/allocations", json=body, headers={"Authorization": f"Bearer {filler}"}
        ) as r,
    ):
        assert r.status == 201, await r.text()

    token = await pool.add_user(
        "fuzzer", allocations=100_000, cpus=100_000.0, memory_bytes=1 << 60, disk_bytes=1 << 60
    )

    def schemathesis(phases: str) -> list[str]:
        return [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            f"{pool.api}/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            os.environ.get("POTLUCK_FUZZ_EXAMPLES", "500"),
            "--phases",
            phases,
            "--workers",
            "2",
            "--seed",
            os.environ.get("POTLUCK_FUZZ_SEED", "1"),  # another seed explores other inputs
        ]

    # Two schemathesis processes side by side: one is bound to one core (its workers are
    # threads), and the stateful phase does not build on the others' results.
    runs = await asyncio.gather(
        *(
            asyncio.to_thread(
                subprocess.run,
                schemathesis(phases),
                capture_output=True,
                text=True,
                timeout=540,
                cwd=tmp_path,
                check=False,
            )
            for phases in ("examples,coverage,fuzzing", "stateful")
        )
    )
    for done in runs:
        assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-2000:] + pool.logs()[-4000:]
