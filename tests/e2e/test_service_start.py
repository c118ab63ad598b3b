"""A central service started as the README's operator quick start does (`potluck registry &`),
with its event log or its NATS not where the settings say: what the operator reads and can do."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from potluck.localstack import free_port
from tests.fixtures.pool import Pool
from tests.helpers import json_log


def service_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POTLUCK_", "OTEL_"))}
    return {
        **env,
        "POTLUCK_HOME": str(tmp_path / "state"),
        "POTLUCK_DATABASE_URL": database_url,
        # A port nothing listens on: NATS is not there.
        "POTLUCK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
    }


def test_an_unreachable_event_log_is_named_without_a_traceback(tmp_path: Path) -> None:
    """Tried: `potluck registry` and `potluck allocator` with POTLUCK_DATABASE_URL naming a port
    where no Postgres listens, its password in the URL. Must hold: each exits 1 within seconds
    with one error line naming the URL (password hidden) and where to give another, and no
    Python traceback (it was one ending in ConnectionRefusedError)."""
    url = f"postgresql://potluck:s3cret@127.0.0.1:{free_port()}/potluck"
    for service in ("registry", "allocator"):
        done = subprocess.run(
            [sys.executable, "-m", "potluck", service],
            env=service_env(url, tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, (service, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "s3cret" not in done.stderr, done.stderr
        assert "error: cannot open the event log at postgresql://potluck:***@127.0.0.1:" in done.stderr
        assert "(--database-url or POTLUCK_DATABASE_URL)" in done.stderr, done.stderr


def test_a_service_waiting_for_nats_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    """Tried: `potluck registry` with a real event log and NATS nowhere (it retries NATS), then
    SIGTERM a few seconds later, as `kill %1` after `potluck registry &`. Must hold: it ends
    within 10 s, exit 0, saying it stopped while starting (it went on retrying NATS for ever,
    SIGTERM and SIGINT ignored until NATS answered)."""
    log = tmp_path / "registry.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "potluck", "registry"],
            env=service_env(database_url, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "bus.error" not in log.read_text():  # it is retrying NATS now
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log.read_text()
    assert "registry.stopped_while_starting" in log.read_text()


async def test_an_allocator_that_cannot_listen_says_so_in_one_line_without_a_traceback(pool: Pool) -> None:
    """Tried: the pool's allocator started again on a port a socket holds bound (not listening,
    as when another program takes it while the pool starts). Before: the crash handler logged
    it as a bug, one JSON line whose `exception` held the whole traceback, which `potluck up`
    then showed. Must hold: the allocator exits 1; its log's JSON line is `allocator.failed`
    naming the port, with no traceback, and its last line says `error: cannot listen on ...`."""
    pool.processes["allocator"].stop()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        allocator = pool.start_allocator(port=port)
        deadline = time.monotonic() + 60
        while allocator.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    assert allocator.exit_code() == 1, allocator.log_tail(20)
    text = allocator.log_path.read_text()
    assert "Traceback" not in text, text[-3000:]
    [failed] = json_log(text, "allocator.failed")
    assert failed["level"] == "error"
    assert f"cannot listen on 127.0.0.1:{port}" in failed["error"], failed
    assert text.splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}"), text[-1000:]
