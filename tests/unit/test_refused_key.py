"""potluck.user.refused_key: the line said when the gateway refuses the user's key, and running
ssh as a child as exec did (its stderr passed on, its exit code or signal kept).

The refusal through the real gateway is tests/e2e/test_refused_keys.py; here, what depends only
on the files in ~/.ssh and on how a child process ends, with `sh` standing in for ssh.
"""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from potluck.user.refused_key import REFUSED, explain_refusal, fingerprint, run_ssh


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / ".ssh").mkdir()
    return tmp_path


def test_fingerprints_are_those_ssh_keygen_prints(home: Path) -> None:
    printed = keygen(home / ".ssh" / "id_ed25519")
    assert fingerprint((home / ".ssh" / "id_ed25519.pub").read_text()) == printed
    assert fingerprint("not a key") is None
    assert fingerprint("ssh-ed25519 !!!") is None


def test_without_i_the_default_keys_and_the_agent_are_named(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered = keygen(home / ".ssh" / "id_ed25519")
    admitted = keygen(home / "elsewhere")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    said = explain_refusal("a-1", None, [(home / "elsewhere.pub").read_text()])
    assert "\n" not in said
    assert f"ssh offered ~/.ssh/id_ed25519 ({offered}), your ssh-agent's keys;" in said
    assert f"a-1 admits only the keys it was created with (--ssh-key): {admitted} (ssh-ed25519" in said
    assert "no key in ~/.ssh is one of them: run this where the private key of one is" in said
    assert "--ssh-key ~/.ssh/id_ed25519.pub" in said


def test_a_matching_key_in_ssh_is_named_and_no_key_at_all_is_said(home: Path) -> None:
    keygen(home / ".ssh" / "work")
    line = (home / ".ssh" / "work.pub").read_text()
    said = explain_refusal("a-1", None, [line])
    assert "ssh offered no key (none of ssh's default key files is in ~/.ssh)" in said
    assert "~/.ssh/work is the private half of one of them: give it with -i" in said
    none = explain_refusal("a-1", str(home / ".ssh" / "work"), [])
    assert "a-1 admits no key at all" in none
    assert "(-i)" in none
    unknown = explain_refusal("a-1", None, None)
    assert "`potluck alloc show a-1 --json` lists them" in unknown


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
