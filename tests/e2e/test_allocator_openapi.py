"""schemathesis against /v1/openapi.json: no 5xx, and every response fits the schema."""

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.fixtures.pool import EnrolledHost, Pool


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    pool: Pool, laptop: EnrolledHost, tmp_path: Path
) -> None:
    await pool.wait_api()
    token = await pool.add_user("fuzzer", allocations=10_000, cpus=10_000.0, memory_bytes=1 << 50)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{pool.api}/v1/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        "30",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--seed",
        "1",
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:] + pool.logs()
