"""`potluck login --gateway-key`: the user's OpenSSH is held to the gateway's key from the first
connection on, instead of trusting whatever key answers first.

The real `potluck` command (login, then `ssh`) and the real OpenSSH client, against a pool with
a gateway (conftest's `gatewayed`), each user with their own client configuration directory.
"""

import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.e2e.conftest import Gatewayed


def _potluck(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["POTLUCK_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_a_pinned_gateway_key_is_held_from_the_first_connection(
    gatewayed: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: a user logs in naming a key that is not the gateway's (as if a machine in
    the middle answered at the gateway's address), then runs `potluck ssh`; then logs in again
    with the gateway's own key (`potluck sshgateway --print-host-key`), over a known_hosts that
    already held a key for that address. Before the fix `login` had no such option and the
    first connection trusted whatever key answered.
    What must hold: with the wrong key, ssh refuses to connect (the host key differs) and runs
    nothing; with the right one, the command runs at once, nothing is "added" on first use, and
    the known_hosts file holds exactly one entry for the gateway; a malformed key is refused
    before anything is saved."""
    g = gatewayed
    async with aiohttp.ClientSession() as http:
        alloc_id = await g.allocate(http)
    config = tmp_path / "client" / "client.toml"
    gateway = f"127.0.0.1:{g.ssh_port}"
    login = ("login", "--url", g.pool.api, "--token", g.token, "--gateway", gateway)
    ssh = ("ssh", alloc_id, "-i", str(g.key), "--", "echo", "reached")

    bad = _potluck(*login, "--gateway-key", "not-a-key", config=config)
    assert bad.returncode == 2, bad
    assert "--gateway-key" in bad.stderr
    assert not config.exists()

    stranger = Path(f"{g.key}.pub").read_text()  # some other ed25519 key: not the gateway's
    pinned = _potluck(*login, "--gateway-key", stranger, config=config)
    assert pinned.returncode == 0, pinned.stderr
    known = config.with_name("known_hosts")
    assert known.read_text().count(f"[127.0.0.1]:{g.ssh_port} ") == 1
    refused = _potluck(*ssh, config=config)
    assert refused.returncode == 255, refused
    assert "reached" not in refused.stdout
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr, refused.stderr

    host_key = _potluck(
        "sshgateway", "--print-host-key", "--state-dir", str(g.pool.gateway_state_dir), config=config
    )
    assert host_key.returncode == 0, host_key.stderr
    assert host_key.stdout.strip() == g.pool.gateway_host_key()
    again = _potluck(*login, "--gateway-key", host_key.stdout.strip(), config=config)
    assert again.returncode == 0, again.stderr
    lines = [line for line in known.read_text().splitlines() if line.strip()]
    assert lines == [f"[127.0.0.1]:{g.ssh_port} {' '.join(host_key.stdout.split()[:2])}"], lines
    reached = _potluck(*ssh, config=config)
    assert (reached.returncode, reached.stdout) == (0, "reached\n"), reached.stderr
    assert "Permanently added" not in reached.stderr
