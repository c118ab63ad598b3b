"""A key the gateway refuses: `potluck ssh`, `potluck logs` and `potluck cp` say so, through the
real gateway and hostd, with the user's real `ssh`.

OpenSSH says only "Permission denied (publickey)." there, which named neither the key offered
nor the keys the allocation admits nor what to do. Now each command passes ssh's words on and
adds that, in one line; the exit code stays ssh's (255).
"""

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.user.client import Login
from tests.e2e.conftest import Gatewayed, start_gatewayed
from tests.fixtures.pool import Pool
from tests.fixtures.user_home import with_home


@pytest.fixture
async def gated(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Gatewayed:
    """A gateway that does not hold back a source's or an allocation's next login after a failed
    one (its defaults wait 0.5 s, doubling: 19 s over this test's refusals, which is not what it
    tries); its lockouts are its own (tests/e2e/test_ssh_gateway.py tries the delays)."""
    monkeypatch.setenv("POTLUCK_SSHGATEWAY_SOURCE_DELAY_S", "0")
    monkeypatch.setenv("POTLUCK_SSHGATEWAY_ALLOC_DELAY_S", "0")
    return await start_gatewayed(pool, docker_engines[0], tmp_path)


async def potluck(
    *args: str, env: dict[str, str], home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`potluck ARGS`; with `home`, run where the password database names it this user's home
    (ssh's ~), as it would be on the user's machine (tests/fixtures/user_home.py)."""
    argv = [sys.executable, "-m", "potluck", *args]
    if home is not None:
        argv = with_home(home, argv, home.parent)
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def logged_in(g: Gatewayed, tmp_path: Path, home: Path) -> dict[str, str]:
    """The environment of a user logged in to `g`'s pool (a client file of their own), whose home
    is `home`, with no ssh-agent: ssh offers only the key files it is given or finds."""
    config = tmp_path / "client" / "client.toml"
    Login(g.pool.api, g.token, f"127.0.0.1:{g.ssh_port}").save(config)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return {**env, "POTLUCK_CONFIG": str(config), "HOME": str(home)}


def keygen(path: Path) -> str:
    """A new ed25519 key at `path`; its fingerprint as `ssh-keygen -l` prints it."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return keygen_print(path)


async def test_a_refused_key_is_named_with_the_admitted_ones_and_what_to_do(
    gated: Gatewayed, tmp_path: Path
) -> None:
    """Tried (as a user whose home is `home`, $HOME too): an allocation that admits alice's key,
    reached with another key of hers (-i) by
    `potluck ssh`, `potluck logs` and `potluck cp` both ways, while the admitted key sits in her
    ~/.ssh under another name; then with that key; then an allocation that admits no key.
    Must hold: each refused run exits 255 (ssh's code), keeps ssh's own words, and says in one
    line that the gateway refused the key ssh offered, which file and fingerprint went (as
    `ssh-keygen -l` prints it), the fingerprint the allocation admits, and to give ~/.ssh/work
    with -i; that advice works, and a command's own exit code still comes through; an
    allocation that admits no key says so and how to make one that does."""
    g = gated
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    wrong = home / ".ssh" / "id_other"
    wrong_print = keygen(wrong)
    work = home / ".ssh" / "work"  # the admitted key, kept under another name
    shutil.copy(g.key, work)
    shutil.copy(f"{g.key}.pub", f"{work}.pub")
    admitted_print = keygen_print(work)
    env = logged_in(g, tmp_path, home)
    async with aiohttp.ClientSession() as http:
        alloc_id = await g.allocate(http)
    payload = tmp_path / "payload.txt"
    payload.write_text("hello\n")

    refused = {
        "ssh": await potluck("ssh", alloc_id, "-i", str(wrong), "--", "true", env=env, home=home),
        "logs": await potluck("logs", "-i", str(wrong), alloc_id, env=env, home=home),
        "cp up": await potluck("cp", "-i", str(wrong), str(payload), f"{alloc_id}:/tmp/", env=env, home=home),
        "cp down": await potluck(
            "cp", "-i", str(wrong), f"{alloc_id}:/etc/hostname", str(tmp_path), env=env, home=home
        ),
    }
    for name, done in refused.items():
        said = done.stderr
        assert done.returncode == 255, (name, done.stdout, said)
        assert f"the gateway refused the key ssh offered for {alloc_id}" in said, (name, said)
        assert f"ssh offered ~/.ssh/id_other ({wrong_print}) (-i)" in said, (name, said)
        assert f"{alloc_id} admits only the keys it was created with (--ssh-key): {admitted_print}" in said
        advice = (
            f"~/.ssh/work is the private half of one of them: give it with -i, e.g. `potluck ssh {alloc_id}"
        )
        assert f"{advice} -i ~/.ssh/work`" in said, (name, said)
        explained = [line for line in said.splitlines() if "the gateway refused" in line]
        assert len(explained) == 1, (name, said)  # one line, whole, for scripts that grep it
        if name in ("ssh", "logs"):
            assert "Permission denied (publickey)." in said, (name, said)  # ssh's own words, passed on

    reached = await potluck(
        "ssh", alloc_id, "-i", str(work), "--", "echo reached; exit 7", env=env, home=home
    )
    assert (reached.returncode, reached.stdout) == (7, "reached\n"), reached.stderr
    assert "refused" not in reached.stderr, reached.stderr
    copied = await potluck("cp", "-i", str(work), str(payload), f"{alloc_id}:/tmp/", env=env, home=home)
    assert copied.returncode == 0, copied.stderr

    # An allocation that admits no key (made without --ssh-key where ~/.ssh held none).
    headers = {"Authorization": f"Bearer {g.token}"}
    body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "3600"]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{g.pool.api}/v1/allocations", json=body, headers=headers) as r:
            keyless = (await r.json())["id"]
        async with http.get(
            f"{g.pool.api}/v1/allocations/{keyless}?wait=running&timeout=30", headers=headers
        ) as r:
            assert (await r.json())["state"] == "running"
    nobody = await potluck("ssh", keyless, "-i", str(work), "--", "true", env=env, home=home)
    assert nobody.returncode == 255, nobody.stderr
    assert f"{keyless} admits no key at all" in nobody.stderr, nobody.stderr
    assert "--ssh-key ~/.ssh/id_ed25519.pub" in nobody.stderr, nobody.stderr


def keygen_print(path: Path) -> str:
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


async def test_a_locked_out_address_is_said_as_such_not_as_a_wrong_key(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: 3 logins with a key the allocation does not admit lock this address out
    (POTLUCK_SSHGATEWAY_SOURCE_LOCKOUT_AFTER=3); then `potluck ssh`, `potluck logs` and `potluck
    cp` with the key it admits. Before, each said the gateway refused that key and listed the
    same fingerprint as offered and as admitted, telling the user to make a new allocation.
    Must hold: each exits 255 (ssh's code) and says, in one line, that the gateway did not try
    the key because too many logins failed from this address, and when to try again; nothing
    says the key is not admitted."""
    monkeypatch.setenv("POTLUCK_SSHGATEWAY_SOURCE_DELAY_S", "0")
    monkeypatch.setenv("POTLUCK_SSHGATEWAY_ALLOC_DELAY_S", "0")
    monkeypatch.setenv("POTLUCK_SSHGATEWAY_SOURCE_LOCKOUT_AFTER", "3")
    g = await start_gatewayed(pool, docker_engines[0], tmp_path)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    wrong = home / ".ssh" / "id_other"
    keygen(wrong)
    env = logged_in(g, tmp_path, home)
    async with aiohttp.ClientSession() as http:
        alloc_id = await g.allocate(http)
    for _ in range(3):
        guessed = await potluck("ssh", alloc_id, "-i", str(wrong), "--", "true", env=env, home=home)
        assert "admits only the keys it was created with" in guessed.stderr, guessed.stderr

    locked = {
        "ssh": await potluck("ssh", alloc_id, "-i", str(g.key), "--", "true", env=env, home=home),
        "logs": await potluck("logs", "-i", str(g.key), alloc_id, env=env, home=home),
        "cp down": await potluck(
            "cp", "-i", str(g.key), f"{alloc_id}:/etc/hostname", str(tmp_path), env=env, home=home
        ),
    }
    for name, done in locked.items():
        said = done.stderr
        assert done.returncode == 255, (name, done.stdout, said)
        explained = [line for line in said.splitlines() if "too many logins failed from your address" in line]
        assert len(explained) == 1, (name, said)
        if name == "ssh":
            # `potluck ssh` shows ssh's INFO lines: the gateway's banner, whose wait it repeats.
            assert "the gateway did not try the key" in explained[0], (name, said)
            assert "try again in " in explained[0], (name, said)
        else:
            # logs and cp run ssh quietly (LogLevel=ERROR: no banner): the key is one the
            # allocation admits, which says as much.
            assert f"though it is one {alloc_id} admits" in explained[0], (name, said)
        assert "admits only the keys" not in said, (name, said)
