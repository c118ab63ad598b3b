"""potluck.user.refused_key: the line said when the gateway refuses the user's key, and running
ssh as a child as exec did (its stderr passed on, its exit code or signal kept).

The refusal through the real gateway is tests/e2e/test_refused_keys.py; here, what depends only
on the files in ~/.ssh and on how a child process ends, with `sh` standing in for ssh.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from potluck.user.refused_key import REFUSED, explain_refusal, fingerprint, lockout, run_ssh
from tests.fixtures.user_home import with_home


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home for the password database to name (with_home); $HOME is the same one unless a
    test says otherwise."""
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    return tmp_path / "home"


def said(
    home: Path,
    identity: str | None,
    admitted: list[str] | None,
    *,
    env_home: Path | None = None,
    agent: bool = False,
) -> str:
    """explain_refusal's line, run where this user's home is `home` (and $HOME is `env_home`,
    or `home`): ssh reads its keys from the former (tests/fixtures/user_home.py)."""
    script = (
        "import json, sys; from potluck.user.refused_key import explain_refusal; "
        "print(explain_refusal(*json.loads(sys.argv[1])))"
    )
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(env_home or home)
    if agent:
        env["SSH_AUTH_SOCK"] = "/tmp/agent.sock"
    args = json.dumps(["a-1", identity, admitted])
    argv = with_home(home, [sys.executable, "-c", script, args], home.parent)
    ran = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.rstrip("\n")


def test_fingerprints_are_those_ssh_keygen_prints(home: Path) -> None:
    printed = keygen(home / ".ssh" / "id_ed25519")
    assert fingerprint((home / ".ssh" / "id_ed25519.pub").read_text()) == printed
    assert fingerprint("not a key") is None
    assert fingerprint("ssh-ed25519 !!!") is None


def test_without_i_the_default_keys_and_the_agent_are_named(home: Path) -> None:
    offered = keygen(home / ".ssh" / "id_ed25519")
    admitted = keygen(home / "elsewhere")
    line = said(home, None, [(home / "elsewhere.pub").read_text()], agent=True)
    assert "\n" not in line
    assert f"ssh offered ~/.ssh/id_ed25519 ({offered}), your ssh-agent's keys;" in line
    assert f"a-1 admits only the keys it was created with (--ssh-key): {admitted} (ssh-ed25519" in line
    assert "no key in ~/.ssh is one of them: run this where the private key of one is" in line
    assert "--ssh-key ~/.ssh/id_ed25519.pub" in line


def test_a_matching_key_in_ssh_is_named_and_no_key_at_all_is_said(home: Path) -> None:
    keygen(home / ".ssh" / "work")
    line = said(home, None, [(home / ".ssh" / "work.pub").read_text()])
    assert "ssh offered no key (none of ssh's default key files is in ~/.ssh)" in line
    assert "~/.ssh/work is the private half of one of them: give it with -i" in line
    none = explain_refusal("a-1", str(home / ".ssh" / "work"), [])
    assert "a-1 admits no key at all" in none
    assert "(-i)" in none
    unknown = explain_refusal("a-1", None, None)
    assert "`potluck alloc show a-1 --json` lists them" in unknown


def test_with_home_elsewhere_the_keys_ssh_reads_are_named_not_homes(home: Path, tmp_path: Path) -> None:
    """Tried: $HOME names another directory than the password database's home (`sudo -E`, a
    systemd unit's HOME=), with a default key file in $HOME/.ssh and none in the real ~/.ssh.
    Before the fix the line said ssh offered $HOME's id_ed25519, which ssh never reads.
    Must hold: the line says ssh offered no key, names the directory ssh reads and that
    $HOME's keys go only with -i, and still finds the admitted key in $HOME/.ssh for -i."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".ssh").mkdir(parents=True)
    keygen(elsewhere / ".ssh" / "id_ed25519")
    line = said(home, None, [(elsewhere / ".ssh" / "id_ed25519.pub").read_text()], env_home=elsewhere)
    assert f"ssh offered no key (none of ssh's default key files is in {home}/.ssh)" in line, line
    assert f"(ssh reads {home}/.ssh, its user's home in the password database, not $HOME/.ssh" in line
    assert f"{elsewhere}/.ssh's keys go only with -i" in line
    assert f"{elsewhere}/.ssh/id_ed25519 is the private half of one of them: give it with -i" in line
    assert "~/" not in line.split("admits only")[0], line  # ~ would be $HOME in the user's shell


def test_ssh_runs_as_a_child_its_stderr_passed_on_and_its_exit_code_kept(
    capfd: pytest.CaptureFixture[str],
) -> None:
    ran = run_ssh(["sh", "-c", f"echo out; echo '{REFUSED}).' >&2; exit 255"], stdin=subprocess.DEVNULL)
    assert (ran.status, ran.refused_key, ran.interrupted) == (255, True, False)
    seen = capfd.readouterr()
    assert seen.out == "out\n"
    assert seen.err == f"{REFUSED}).\n"
    assert not run_ssh(["sh", "-c", f"echo '{REFUSED})' >&2; exit 1"]).refused_key
    capfd.readouterr()
    big = run_ssh(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x >&2; exit 7"])
    assert big.status == 7
    assert len(capfd.readouterr().err) == 300_000


def test_sigterm_to_potluck_reaches_ssh_and_potluck_ends_as_it_did(tmp_path: Path) -> None:
    """`potluck ssh` once exec'd ssh: a SIGTERM sent to its PID ended ssh. Now it is passed on,
    and the command ends by the same signal."""
    script = (
        "import sys; from potluck.user.refused_key import exit_as, run_ssh; "
        "exit_as(run_ssh(['sh', '-c', 'echo started; exec sleep 30'], stdin=-3))"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM


def test_the_gateways_lockout_banner_is_said_instead_of_a_wrong_key() -> None:
    """Tried: ssh's stderr holding the gateway's lockout banner (from the address, then an
    allocation's, with and without the `potluck: ` prefix cp strips), and none. Must hold: the
    last banner's cause and wait are said and nothing about the key; without one, the key
    explanation as before."""
    address = (
        "potluck: too many failed logins from your address; try again in 297 s\r\n"
        "Permission denied (publickey)."
    )
    said = explain_refusal("a-1", None, ["ssh-ed25519 AAAA x"], address)
    assert "too many logins failed from your address" in said
    assert "try again in 297 s" in said
    assert "admits only" not in said
    stripped = "too many failed logins to this allocation; try again in 5 s; Permission denied (publickey)."
    assert lockout("a-1", stripped) == (
        "the gateway did not try the key ssh offered for a-1 (ssh said: Permission denied (publickey)): "
        "too many logins to a-1 failed, so for now it refuses every key not its own; try again in 5 s "
        "(its banner above says so too)"
    )
    assert lockout("a-1", "Permission denied (publickey).") is None
