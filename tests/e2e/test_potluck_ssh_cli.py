"""`potluck ssh`'s own arguments, through the real gateway and hostd, with the user's real `ssh`.

ssh's options after the id reach ssh or are refused saying why; the command after them (or
after `--`) reaches the far side whole; the keys said to be offered are those ssh offers, read
from the home the password database gives the user, whatever $HOME says.
"""

import os
from pathlib import Path

import aiohttp
import pytest

from potluck.localstack.docker_engine import DockerEngine
from potluck.user.client import Login
from tests.e2e.conftest import Gatewayed, start_gatewayed
from tests.e2e.test_refused_keys import potluck
from tests.fixtures.pool import Pool


@pytest.fixture
async def gated(pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path) -> Gatewayed:
    return await start_gatewayed(pool, docker_engines[0], tmp_path)


def _user_env(g: Gatewayed, tmp_path: Path, home: Path) -> dict[str, str]:
    config = tmp_path / "client" / "client.toml"
    Login(g.pool.api, g.token, f"127.0.0.1:{g.ssh_port}").save(config)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return {**env, "POTLUCK_CONFIG": str(config), "HOME": str(home)}


async def test_ssh_options_after_the_id_reach_ssh_or_are_refused_and_the_command_stays_whole(
    gated: Gatewayed, tmp_path: Path
) -> None:
    """Tried: `potluck ssh ID -L 8080:localhost:80` (and -A, -o LocalForward=..., -p), then
    `ID -v -- echo ...`, `ID -i KEY grep -i ...`, `ID -- -L` and `--help`.
    Before the fix -L and its value were run by the container's shell ("Illegal option -L")
    and `grep -i PATTERN` took `-i PATTERN` as the key file.
    Must hold: a forwarding option is refused before ssh runs (usage exit 2, saying the
    gateway forwards no ports and which options pass), -v reaches ssh (its debug lines) and the
    command still runs, `grep -i` keeps its -i, a `-L` after `--` reaches the far side as an
    argument, and --help names the options passed on."""
    g = gated
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = _user_env(g, tmp_path, home)
    async with aiohttp.ClientSession() as http:
        alloc_id = await g.allocate(http)
    key = str(g.key)

    for refused, why in (
        (["-L", "8080:localhost:80"], "the gateway forwards no ports"),
        (["-A"], "the gateway forwards no ports, agent or X11"),
        (["-o", "LocalForward=8080 localhost:80"], "the gateway forwards no ports"),
        (["-p", "22"], "the gateway's address and port are those given to `potluck login`"),
    ):
        done = await potluck("ssh", alloc_id, "-i", key, *refused, env=env, home=home)
        assert done.returncode == 2, (refused, done.stdout, done.stderr)
        assert refused[0] in done.stderr, (refused, done.stderr)
        assert why in done.stderr, (refused, done.stderr)
        assert "potluck ssh passes on -v -q -t -T" in done.stderr, done.stderr
        assert "Illegal option" not in done.stderr, done.stderr
        assert done.stdout == "", done.stdout

    verbose = await potluck("ssh", alloc_id, "-i", key, "-v", "--", "echo", "ran", env=env, home=home)
    assert (verbose.returncode, verbose.stdout) == (0, "ran\n"), verbose.stderr
    assert "debug1:" in verbose.stderr, verbose.stderr  # -v went to ssh, not to the shell

    grep = await potluck("ssh", alloc_id, "-i", key, "grep", "-i", "ROOT:", "/etc/passwd", env=env, home=home)
    assert grep.returncode == 0, grep.stderr
    assert grep.stdout.startswith("root:"), grep.stdout

    dashed = await potluck("ssh", alloc_id, "-i", key, "--", "echo", "-L", "8080", env=env, home=home)
    assert (dashed.returncode, dashed.stdout) == (0, "-L 8080\n"), dashed.stderr

    helped = await potluck("ssh", "--help", env=env, home=home)
    assert helped.returncode == 0, helped.stderr
    words = " ".join(helped.stdout.split())  # as wrapped at any width
    assert "ALLOC_ID [SSH_OPTIONS]... [--] [COMMAND]..." in words, helped.stdout
    assert "-L, -R, -D, -A, -X are refused" in words, helped.stdout
    assert "-J reach the gateway" in words, helped.stdout


async def test_with_home_elsewhere_the_refusal_names_the_keys_ssh_really_offered(
    gated: Gatewayed, tmp_path: Path
) -> None:
    """Tried: a user whose home (password database) holds no key, with $HOME pointing at another
    directory whose ~/.ssh/id_ed25519 is the allocation's key (as under `sudo -E` or a systemd
    unit), runs `potluck ssh ID -v -- true` without -i.
    Before the fix the refusal said ssh offered $HOME's id_ed25519, which ssh never read.
    Must hold: ssh is refused (255); the line says ssh offered no key, names the directory ssh
    reads and that $HOME's keys go only with -i; ssh's own -v lines confirm it tried no file
    under $HOME; following the advice (-i that file) gets in."""
    g = gated
    real = tmp_path / "real"
    (real / ".ssh").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".ssh").mkdir(parents=True)
    admitted = elsewhere / ".ssh" / "id_ed25519"
    admitted.write_bytes(g.key.read_bytes())
    admitted.chmod(0o600)
    Path(f"{admitted}.pub").write_text(Path(f"{g.key}.pub").read_text())
    env = _user_env(g, tmp_path, elsewhere)
    async with aiohttp.ClientSession() as http:
        alloc_id = await g.allocate(http)

    refused = await potluck("ssh", alloc_id, "-v", "--", "true", env=env, home=real)
    said = refused.stderr
    assert refused.returncode == 255, said
    line = next(line for line in said.splitlines() if "the gateway refused" in line)
    assert f"ssh offered no key (none of ssh's default key files is in {real}/.ssh)" in line, line
    assert f"(ssh reads {real}/.ssh, its user's home in the password database, not $HOME/.ssh" in line
    assert f"{admitted} is the private half of one of them: give it with -i" in line, line
    tried = [s for s in said.splitlines() if "Will attempt key:" in s]
    assert tried, said
    assert all(str(real) in s for s in tried), tried  # ssh read the real home's, as said
    assert not any(str(elsewhere) in s for s in tried), tried

    reached = await potluck("ssh", alloc_id, "-i", str(admitted), "--", "echo in", env=env, home=real)
    assert (reached.returncode, reached.stdout) == (0, "in\n"), reached.stderr
