"""What `potluck ssh`, `cp` and `logs` say when the gateway refuses the user's key.

The gateway answers a key it does not admit as any SSH server must: OpenSSH prints only
"Permission denied (publickey)." and exits 255, which says neither which key went, nor which
keys the allocation admits, nor what to do. These commands have asked the allocator first that
the allocation is the user's and has a container, so by then the key is what was refused; they
run ssh as a child, pass its stderr on as it comes, and on that refusal add what the user needs:
the key files ssh offered, the keys the allocation admits (by fingerprint, as `ssh-keygen -lf
FILE.pub` prints them), a private key of this machine's ~/.ssh that one of them matches (give
it with -i), or else how to make an allocation that admits one. The exit code stays ssh's (255).

~/.ssh is where ssh looks: the home the password database gives the user (ssh_keys.ssh_home),
as OpenSSH takes it, never $HOME. With $HOME pointing elsewhere (`sudo -E`, a systemd unit)
this named $HOME's keys as the ones offered, which ssh never read.
"""

import base64
import binascii
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from potluck.user.ssh_keys import DEFAULT_IDENTITIES, home_aside, ssh_dir, ssh_home

__all__ = ["REFUSED", "SshRun", "exit_as", "explain_refusal", "fingerprint", "lockout", "run_ssh"]

#: What OpenSSH prints when the server took none of the keys offered (and offers nothing else).
REFUSED = "Permission denied (publickey"
#: Keys OpenSSH offers without -i, in its order (ssh(1), -i), the security-key ones too.
OFFERED_BY_DEFAULT = (*DEFAULT_IDENTITIES, "id_ecdsa_sk", "id_ed25519_sk")
#: How much of ssh's stderr is kept to look for the refusal (it is its last words).
_TAIL = 8192
#: The banner the gateway sends (and ssh prints) when it refuses every key for a while, its own
#: sshgateway server's words: after that, "Permission denied" says nothing about the key.
_LOCKED_OUT = re.compile(
    r"too many failed logins (from your address|to this allocation); try again in (\d+) s"
)


def fingerprint(line: str) -> str | None:
    """`SHA256:...` of an OpenSSH public key line, as `ssh-keygen -l` prints it; None if not a key."""
    fields = line.split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _public_line(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None


def _shown(path: Path | str) -> str:
    """A path as the user would type it: ~ for their home, when $HOME is the home ssh reads
    (ssh_home); else whole, since ~ would name another directory in their shell than in ssh."""
    text = str(path)
    home = str(ssh_home())
    if os.environ.get("HOME", home).rstrip(os.sep) != home.rstrip(os.sep):
        return text
    return "~" + text[len(home) :] if text == home or text.startswith(home + os.sep) else text


def _offered(identity: str | None) -> str:
    """The keys ssh offered, for people: files with their fingerprints. Without -i, the default
    key files of the home ssh reads (ssh_home), never $HOME's: ssh does not look there."""

    def described(path: Path) -> str:
        line = _public_line(path.with_name(path.name + ".pub"))
        fp = fingerprint(line) if line else None
        return f"{_shown(path)} ({fp or 'no .pub beside it to tell which key'})"

    if identity is not None:
        return described(Path(identity)) + " (-i)"
    keys = ssh_dir()
    said = [described(keys / name) for name in OFFERED_BY_DEFAULT if (keys / name).is_file()]
    if os.environ.get("SSH_AUTH_SOCK"):
        said.append("your ssh-agent's keys")
    offered = ", ".join(said) or f"no key (none of ssh's default key files is in {_shown(keys)})"
    aside = home_aside()
    if aside is not None:
        offered += (
            f" (ssh reads {keys}, its user's home in the password database, not $HOME/.ssh: "
            f"{aside}'s keys go only with -i)"
        )
    return offered


def _offered_prints(identity: str | None) -> set[str]:
    """The fingerprints of the key files ssh offered (those with a FILE.pub beside them)."""
    keys = ssh_dir()
    paths = [Path(identity)] if identity is not None else [keys / name for name in OFFERED_BY_DEFAULT]
    lines = (_public_line(path.with_name(path.name + ".pub")) for path in paths)
    return {fp for line in lines if line and (fp := fingerprint(line))}


def _local_matches(admitted: set[str]) -> list[Path]:
    """Private keys in ssh's ~/.ssh (and $HOME/.ssh, if another) whose public half (FILE.pub)
    the allocation admits: either works with -i."""
    found = []
    for keys in (ssh_dir(), home_aside()):
        if keys is None:
            continue
        try:
            publics = sorted(keys.glob("*.pub"))
        except OSError:
            continue
        for public in publics:
            line = _public_line(public)
            private = public.with_suffix("")
            if line and fingerprint(line) in admitted and private.is_file():
                found.append(private)
    return found


def lockout(alloc_id: str, ssh_said: str) -> str | None:
    """What to say when ssh's stderr (`ssh_said`) holds the gateway's lockout banner, or None."""
    matches = list(_LOCKED_OUT.finditer(ssh_said))
    if not matches:
        return None
    whom, seconds = matches[-1].groups()  # the last: what the gateway said to this run
    if whom == "from your address":
        why = (
            "too many logins failed from your address (from this machine, or from another behind "
            "the same address: a shared network, proxy or jump host), so for now it refuses every "
            "key from there"
        )
    else:
        why = f"too many logins to {alloc_id} failed, so for now it refuses every key not its own"
    return (
        f"the gateway did not try the key ssh offered for {alloc_id} (ssh said: Permission denied "
        f"(publickey)): {why}; try again in {seconds} s (its banner above says so too)"
    )


def explain_refusal(
    alloc_id: str, identity: str | None, admitted_keys: Sequence[str] | None, ssh_said: str = ""
) -> str:
    """Why the gateway refused, and what to do, in one line (scripts grep it): `admitted_keys`
    are the allocation's `ssh_keys` (None: the allocator could not be asked); `ssh_said`, what ssh
    wrote on stderr (a lockout, not the key, may be the cause)."""
    locked = lockout(alloc_id, ssh_said)
    if locked is not None:
        return locked
    said = [
        f"the gateway refused the key ssh offered for {alloc_id} (ssh said: Permission denied "
        f"(publickey)); ssh offered {_offered(identity)}"
    ]
    create = (
        "or make an allocation that admits your key: `potluck alloc create ... --ssh-key "
        "~/.ssh/id_ed25519.pub` (`potluck run ... --ssh-key` for a job; README, Quick start: user)"
    )
    if admitted_keys is None:
        said.append(
            f"{alloc_id} admits only the keys given with --ssh-key when it was created (`potluck alloc "
            f"show {alloc_id} --json` lists them): give the private key of one with -i, {create}"
        )
        return "; ".join(said)
    if not admitted_keys:
        said.append(
            f"{alloc_id} admits no key at all (it was created without --ssh-key, where ~/.ssh held no "
            f"key), so nothing can reach it over SSH: {create.removeprefix('or ')}"
        )
        return "; ".join(said)
    prints = {fp: line.split() for line in admitted_keys if (fp := fingerprint(line))}
    if _offered_prints(identity) & set(prints):
        return (
            f"the gateway refused the key ssh offered for {alloc_id} (ssh said: Permission denied "
            f"(publickey)), though it is one {alloc_id} admits ({_offered(identity)}): most likely "
            "too many logins failed from your address (from this machine, or from another behind the "
            "same address: a shared network, proxy or jump host), and for a while (5 minutes by "
            "default) the gateway refuses every key from there; try again later"
        )
    admitted = ", ".join(f"{fp} ({' '.join(words[:1] + words[2:])})" for fp, words in prints.items())
    said.append(f"{alloc_id} admits only the keys it was created with (--ssh-key): {admitted}")
    matching = [p for p in _local_matches(set(prints)) if identity is None or Path(identity) != p]
    if matching:
        key = _shown(matching[0])
        said.append(
            f"{key} is the private half of one of them: give it with -i, e.g. `potluck ssh {alloc_id} "
            f"-i {key}` (`potluck cp` and `potluck logs` take -i too)"
        )
    else:
        said.append(
            f"no key in {_shown(ssh_dir())} is one of them: run this where the private key of "
            f"one is, giving it with -i, {create}"
        )
    return "; ".join(said)


class SshRun:
    """How a run of ssh ended: its exit status (negative: killed by that signal), the end of what
    it wrote on stderr, and whether this process was interrupted (SIGINT) meanwhile."""

    def __init__(self, status: int, stderr_tail: str, interrupted: bool) -> None:
        self.status = status
        self.stderr_tail = stderr_tail
        self.interrupted = interrupted

    @property
    def refused_key(self) -> bool:
        return self.status == 255 and REFUSED in self.stderr_tail


def _pass_on(source: Any, tail: list[bytes]) -> None:
    """Copy ssh's stderr to ours as it comes (unbuffered); keep its last bytes in `tail`."""
    fd = source.fileno()
    writing = True
    kept = b""
    while chunk := os.read(fd, 65536):
        kept = (kept + chunk)[-_TAIL:]
        while writing and chunk:
            try:
                chunk = chunk[os.write(2, chunk) :]
            except OSError:  # our stderr went away: keep draining, so that ssh never blocks
                writing = False
    tail.append(kept)


def run_ssh(argv: Sequence[str], *, stdin: int | None = None) -> SshRun:
    """Run `argv` (ssh) with our stdin (or `stdin`) and stdout, its stderr passed on as it comes.

    As with exec: SIGINT and SIGQUIT from the terminal reach ssh through the process group (here
    they are only noted), SIGTERM and SIGHUP sent to this process are passed to ssh."""
    interrupted = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    #: Signals to pass on that came before ssh was known here: Popen returns after ssh has
    #: started, and a SIGTERM in between would otherwise be lost (ssh went on as if none came).
    early: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if child:
            child[0].send_signal(signum)
        else:
            early.append(signum)

    def note(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            interrupted.set()

    handlers: dict[int, Callable[[int, FrameType | None], Any]] = {
        signal.SIGINT: note,
        signal.SIGQUIT: note,
        signal.SIGTERM: forward,
        signal.SIGHUP: forward,
    }
    # Set before ssh starts: it gets the default handlers (exec resets caught signals), where an
    # ignored one would stay ignored in it.
    before = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    tail: list[bytes] = []
    try:
        try:
            proc = subprocess.Popen(list(argv), stdin=stdin, stderr=subprocess.PIPE)
        except FileNotFoundError:
            print(
                f"error: {argv[0]} not found: install OpenSSH's client (Debian: openssh-client)",
                file=sys.stderr,
            )
            sys.exit(127)  # as a shell says of a command it cannot find
        child.append(proc)
        for signum in early:  # a handler runs between two statements: none is missed here
            proc.send_signal(signum)
        reader = threading.Thread(target=_pass_on, args=(proc.stderr, tail), daemon=True)
        reader.start()
        status = proc.wait()
        reader.join(timeout=5)
        if not reader.is_alive():  # else a grandchild holds ssh's stderr open: leave it to it
            proc.stderr.close()  # type: ignore[union-attr]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    said = b"".join(tail).decode(errors="replace")
    return SshRun(status, said, interrupted.is_set())


def exit_as(run: SshRun) -> None:
    """End this process as ssh ended: its exit code, or killed by the same signal."""
    if run.status < 0:
        signal.signal(-run.status, signal.SIG_DFL)
        os.kill(os.getpid(), -run.status)
    sys.exit(run.status if run.status >= 0 else 128 - run.status)
