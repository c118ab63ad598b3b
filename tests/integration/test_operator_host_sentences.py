"""`potluck ops hosts control` and `ops hosts revoke` speak to the operator at the terminal: a
sentence by default, the JSON they printed before with `--json` (real Postgres, the real command).
"""

import asyncio
import json
import os
from pathlib import Path

from potluck.events import EventStore
from tests.e2e.conftest import POTLUCK_OPS
from tests.integration.test_replay import register_host


async def _ops(home: Path, *args: str) -> tuple[int, str, str]:
    # POTLUCK_HOME of no `potluck up`: revoke renders no NATS users file of a pool running here.
    proc = await asyncio.create_subprocess_exec(
        *POTLUCK_OPS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "USER": "olga", "POTLUCK_HOME": str(home)},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_host_commands_print_a_sentence_and_json_only_when_asked(
    store: EventStore, database_url: str, tmp_path: Path
) -> None:
    """Tried: on a registered host, `ops hosts control HOST pause` twice, then once more with
    --json; `ops hosts revoke HOST --reason stolen` twice, then once more with --json.
    Must hold: without --json each prints one sentence saying what was done or that it was
    already so (before, a line of JSON meant for scripts); with --json the JSON as before, its
    `recorded` empty for what was already so; the log holds one HostPaused and one HostRevoked."""
    host_id = await register_host(store, "laptop-a", 1.0)
    home = tmp_path / "no-potluck-up"
    db = ("--database-url", database_url)

    assert await _ops(home, "hosts", "control", host_id, "pause", *db) == (
        0,
        f"pause: done for host {host_id}\n",
        "",
    )
    code, out, err = await _ops(home, "hosts", "control", host_id, "pause", *db)
    assert (code, out) == (0, f"pause: already so for host {host_id}; nothing recorded\n"), err
    code, out, err = await _ops(home, "hosts", "control", host_id, "pause", "--json", *db)
    assert code == 0, err
    assert json.loads(out) == {"host_id": host_id, "action": "pause", "recorded": []}

    code, out, err = await _ops(home, "hosts", "revoke", host_id, "--reason", "stolen", *db)
    assert (code, out) == (0, f"revoked host {host_id} as olga (stolen)\n"), err
    assert "NATS users file" in err, "no file was rendered: the warning says what to do"
    code, out, err = await _ops(home, "hosts", "revoke", host_id, *db)
    assert (code, out) == (0, f"host {host_id} was already revoked; nothing recorded\n"), err
    code, out, err = await _ops(home, "hosts", "revoke", host_id, "--json", *db)
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["host_id"], answer["revoked_by"], answer["recorded"]) == (host_id, "olga", [])

    types = [r.type for r in await store.read_stream(f"host-{host_id}")]
    assert (types.count("HostPaused"), types.count("HostRevoked")) == (1, 1), types
