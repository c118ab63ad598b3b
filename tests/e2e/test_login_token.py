"""`potluck login` without the token on its command line: a bearer token in argv shows in every
local user's process list (/proc/PID/cmdline is world-readable) and stays in the shell's
history. The real `potluck` command against a real allocator (the `pool` fixture).
"""

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.pool import Pool

#: How long the prompt and the login may take on a loaded machine.
WAIT_S = 60.0


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POTLUCK_TOKEN"}
    env["POTLUCK_CONFIG"] = str(config)
    return env


def _login(
    pool: Pool, config: Path, *extra: str, stdin: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", "login", "--url", pool.api, *extra],
        input=stdin,
        capture_output=True,
        text=True,
        env={**_env(config), **(env or {})},
        timeout=WAIT_S,
        check=False,
    )


async def test_the_token_comes_from_standard_input_or_a_prompt_that_does_not_echo(
    pool: Pool, tmp_path: Path
) -> None:
    """Tried: `potluck login --url API` with the token piped on standard input; with `--token -`
    and the token piped; with `--token TOKEN`; with POTLUCK_TOKEN set; with an empty line piped;
    and on a terminal (a pty) with no --token,
    the token typed at the prompt.
    Must hold: the piped and typed logins succeed and save the token (each in its own client
    configuration); so do the other two, only `--token TOKEN` warning that it was on the
    command line; the empty one exits 2 naming the empty token and saves nothing; on the
    terminal the prompt is shown and the typed token is not echoed back."""
    await pool.wait_api()
    token = await pool.add_user("tess")

    piped = await asyncio.to_thread(_login, pool, tmp_path / "piped" / "client.toml", stdin=token + "\n")
    assert piped.returncode == 0, piped.stderr
    assert token in (tmp_path / "piped" / "client.toml").read_text()

    dashed = await asyncio.to_thread(
        _login, pool, tmp_path / "dashed" / "client.toml", "--token", "-", stdin=token + "\n"
    )
    assert dashed.returncode == 0, dashed.stderr
    assert token in (tmp_path / "dashed" / "client.toml").read_text()

    assert "on the command line" not in piped.stderr + dashed.stderr

    # Still accepted on the command line (scripts), saying where it can be read; from the
    # environment (private to its process and user) without a word.
    argv = await asyncio.to_thread(
        _login, pool, tmp_path / "argv" / "client.toml", "--token", token, stdin=""
    )
    assert argv.returncode == 0, argv.stderr
    assert "warning: --token was given on the command line" in argv.stderr, argv.stderr
    from_env = await asyncio.to_thread(
        _login, pool, tmp_path / "env" / "client.toml", stdin="", env={"POTLUCK_TOKEN": token}
    )
    assert from_env.returncode == 0, from_env.stderr
    assert "on the command line" not in from_env.stderr, from_env.stderr

    empty = await asyncio.to_thread(_login, pool, tmp_path / "empty" / "client.toml", stdin="\n")
    assert empty.returncode == 2, empty
    assert "read from standard input is empty" in empty.stderr, empty.stderr
    assert not (tmp_path / "empty" / "client.toml").exists()

    typed_config = tmp_path / "typed" / "client.toml"
    shown = await asyncio.to_thread(_typed_login, pool.api, typed_config, token)
    assert token.encode() not in shown, shown
    assert token in typed_config.read_text()


def _typed_login(api: str, config: Path, token: str) -> bytes:
    """`potluck login --url API` on a terminal (a pty), `token` typed at its prompt: what the
    terminal showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "potluck", "login", "--url", api],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=_env(config),
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""
    try:
        seen = _read_until(controller, b"not shown)", seen)
        os.write(controller, token.encode() + b"\r")
        seen = _read_until(controller, b"logged in to", seen)
        assert process.wait(timeout=WAIT_S) == 0, seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return seen


def _read_until(fd: int, wanted: bytes, seen: bytes) -> bytes:
    """What the terminal showed, read until it shows `wanted` (or WAIT_S passed)."""
    deadline = time.monotonic() + WAIT_S
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
    assert wanted in seen, seen
    return seen
