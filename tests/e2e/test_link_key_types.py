"""Key files replaced by hand with keys of a type the hostd-gateway link does not take.

The link takes ed25519 keys only (potluck.contracts.link.LINK_SIGNATURE_ALGS). Potluck makes
its keys so, but an operator may replace a key file: the gateway's tunnel key then failed every
link's login with asyncssh's words, and hostd's host key was refused by the registry only
after a round trip. Both are now refused at start, naming the file and what to do. The real
`potluck` command and OpenSSH's ssh-keygen; neither start reaches a database or NATS.
"""

import os
import subprocess
import sys
from pathlib import Path

from potluck.kernel.ssh_identity import HOST_KEY_FILE
from potluck.sshgateway.settings import TUNNEL_KEY_FILE


def _keygen(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


def _potluck(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    drop = {"POTLUCK_DATABASE_URL", "POTLUCK_NATS_URL", "POTLUCK_NATS_SEED_FILE"}
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in drop},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_the_gateway_refuses_to_start_with_a_tunnel_key_the_link_does_not_take(tmp_path: Path) -> None:
    """Tried: `potluck sshgateway` whose state directory's tunnel key is an ECDSA key, then an
    RSA key (files an operator put in place), then with the file removed. Must hold: exit 2
    before any database is reached (the URL points at nothing), stderr names the file, its
    type, and says to remove it; the key file is left as it was; once removed, the gateway
    makes an ed25519 key and goes on to the database (whose absence is then what it says)."""
    state = tmp_path / "gateway"
    key = state / TUNNEL_KEY_FILE
    serve = (
        "sshgateway", "--state-dir", str(state), "--database-url", "postgresql://127.0.0.1:9/none",
        "--nats-url", "nats://127.0.0.1:9", "--listen", "127.0.0.1:0", "--tunnel-listen", "127.0.0.1:0",
    )  # fmt: skip
    for kind, algorithm in (("ecdsa", "ecdsa-sha2-nistp256"), ("rsa", "ssh-rsa")):
        key.unlink(missing_ok=True)
        key.with_name(key.name + ".pub").unlink(missing_ok=True)
        _keygen(key, kind)
        before = key.read_bytes()
        done = _potluck(*serve)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{key} holds a key of type {algorithm}," in done.stderr, done.stderr
        assert "remove it and its .pub and start the gateway again" in done.stderr, done.stderr
        assert "--print-client-key" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert key.read_bytes() == before
    key.unlink()
    key.with_name(key.name + ".pub").unlink()
    done = _potluck(*serve)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "holds a key of type" not in done.stderr, done.stderr
    assert key.with_name(key.name + ".pub").read_text().startswith("ssh-ed25519 ")


def test_the_client_key_of_a_type_the_link_does_not_take_is_not_printed(tmp_path: Path) -> None:
    """Tried: `potluck sshgateway --print-client-key` whose state directory's tunnel key is an
    RSA key (a file an operator put in place). Before, its public line was printed, members
    pinned it, and every link then failed its handshake. Must hold: exit code not 0, nothing on
    stdout (nothing to pin), stderr names the file and its type and says to remove it; the
    key file is left as it was."""
    state = tmp_path / "gateway"
    key = state / TUNNEL_KEY_FILE
    _keygen(key, "rsa")
    before = key.read_bytes()
    done = _potluck("sshgateway", "--print-client-key", "--state-dir", str(state))
    assert done.returncode != 0, done.stdout + done.stderr
    assert done.stdout == "", done.stdout
    assert f"{key} holds a key of type ssh-rsa," in done.stderr, done.stderr
    assert "remove it and its .pub and start the gateway again" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert key.read_bytes() == before


def test_hostd_refuses_to_start_with_a_host_key_the_link_does_not_take(tmp_path: Path) -> None:
    """Tried: `potluck hostd` with a valid config whose state_dir's host key is an ECDSA key.
    Before, hostd sent it at registration and the registry answered BAD_SSH_HOST_KEY. Must hold:
    exit 2 at start, before NATS (nothing listens at its URL) or Docker is asked anything;
    stderr names the key file, its type, and says to remove it and its .pub; the file is kept."""
    (tmp_path / "h.creds").write_text('host_id = "h-3f2a9c1e7b40"\nnats_seed = "SUAXX"\n')
    config = tmp_path / "hostd.toml"
    config.write_text(
        'host_id = "h-3f2a9c1e7b40"\ncredentials_file = "h.creds"\nstate_dir = "s"\n'
        'nats_url = "nats://127.0.0.1:9"\ndocker_url = "unix:///nonexistent/docker.sock"\n'
        '[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n'
    )
    key = tmp_path / "s" / HOST_KEY_FILE
    _keygen(key, "ecdsa")
    before = key.read_bytes()
    done = _potluck("hostd", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{HOST_KEY_FILE} holds a key of type ecdsa-sha2-nistp256," in done.stderr, done.stderr
    assert "remove it and its .pub from hostd's state_dir" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert key.read_bytes() == before
