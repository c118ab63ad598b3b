"""The launcher a task's warm container is started ahead with (services/hostd/launcher.py),
run here by this machine's static busybox (ops/setup installs it) as a plain process: the
shell semantics it relies on are busybox's, not Docker's."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from potluck.hostd.helper import HELPER_PATH, find_helper
from potluck.hostd.launcher import GO_SIGNAL, GO_WITH_ENV_SIGNAL, env_payload, is_waiting, launcher_entrypoint

BUSYBOX = find_helper()


def _launch(
    tmp_path: Path,
    argv: list[str],
    *,
    image_env: dict[str, str] | None = None,
    stdin: int = subprocess.DEVNULL,
    env_wait_s: int = 30,
) -> subprocess.Popen[bytes]:
    """The launcher as a container would run it, with the machine's busybox where the
    container has the helper, and `tmp_path/bin` as the image's PATH."""
    assert BUSYBOX is not None, "no static busybox here: run ops/setup (busybox-static)"
    launcher = launcher_entrypoint(None, env_wait_s=env_wait_s)
    entrypoint = [part.replace(HELPER_PATH, BUSYBOX) for part in launcher]
    entrypoint[0] = BUSYBOX
    return subprocess.Popen(
        [*entrypoint, *argv],
        env={**(image_env or {}), "PATH": str(tmp_path / "bin")},
        cwd=tmp_path,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in path.read_text().split():
        # A child may end between the listing and this read (a full run's load made it so).
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found.append(Path(f"/proc/{child}/cmdline").read_bytes().decode())
    return found


def _ended(proc: subprocess.Popen[bytes]) -> None:
    """Killed, reaped and its pipes closed: a failed test's open pipes, collected during a later
    test, failed that one too (pytest's unraisable ResourceWarning)."""
    proc.kill()
    proc.communicate()


def _until_waiting(proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not any("sleep" in c for c in _children(proc.pid)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the launcher never started its wait"
        time.sleep(0.01)


@pytest.fixture
def image_bin(tmp_path: Path) -> Path:
    """An "image" whose `ls` is its own script: busybox has an ls applet too."""
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "ls"
    # `read` is the shell's own: no child of the script's while it lists its children.
    script.write_text(
        f'#!{BUSYBOX} sh\necho "image-ls [$1] [$2]"; echo "stdin=$(cat)"\n'
        'read -r kids < /proc/$$/task/$$/children; echo "children=[$kids]"; exit 3\n'
    )
    script.chmod(0o755)
    return tmp_path


def test_the_launcher_runs_nothing_until_told_then_is_the_command(image_bin: Path) -> None:
    """Tried: the launcher of `ls 'a b' "c'd"` started, left waiting, then sent the go signal.
    Must hold: before the signal nothing of the command ran (no output) and the wait is its
    only child; after it the launcher's process *is* the image's `ls` (not busybox's applet),
    with its arguments intact, stdin empty, its exit code 3, no "Terminated" line and no
    child of the launcher left behind."""
    proc = _launch(image_bin, ["ls", "a b", "c'd"])
    try:
        _until_waiting(proc)
        assert len(_children(proc.pid)) == 1
        os.kill(proc.pid, getattr(signal, GO_SIGNAL))
        out, err = proc.communicate(timeout=10)
    finally:
        _ended(proc)
    assert out.decode() == "image-ls [a b] [c'd]\nstdin=\nchildren=[]\n"
    assert err == b""
    assert proc.returncode == 3


def test_env_values_given_at_the_go_reach_the_command_unchanged(image_bin: Path) -> None:
    """Tried: the launcher, its stdin a pipe as in a warm container, told GO_WITH_ENV_SIGNAL
    and then given values with quotes, `$`, backquotes, a newline, non-ASCII and an empty
    one, plus bytes after the payload; the image's own environment has `p` and `n` (names a
    careless launcher would use itself). Must hold: the command sees exactly the values,
    the image's variables untouched, none of the launcher's own, stdin empty (/dev/null, not
    the pipe: the extra bytes are not read), its arguments intact, its exit code."""
    script = image_bin / "bin" / "env-show"
    script.write_text(
        f"#!{BUSYBOX} sh\n"
        'printf "%s|" "$TOKEN" "$NAME" "$EMPTY" "$p" "$n" "$__potluck_launcher_exe" "$1" "$(cat)"; exit 7\n'
    )
    script.chmod(0o755)
    values = {"TOKEN": 'it\'s "q" $HOME `id`\nline 2', "NAME": "ü  two", "EMPTY": ""}
    proc = _launch(
        image_bin, ["env-show", "a b"], image_env={"p": "image-p", "n": "image-n"}, stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    try:
        _until_waiting(proc)
        os.kill(proc.pid, getattr(signal, GO_WITH_ENV_SIGNAL))
        proc.stdin.write(env_payload(values) + b"not for the command\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=10)
    finally:
        _ended(proc)
    assert out.decode() == f"{values['TOKEN']}|ü  two||image-p|image-n||a b||"
    assert err == b""
    assert proc.returncode == 7


@pytest.mark.parametrize(
    "given",
    [
        b"",  # hostd went away after the signal, before writing
        env_payload({"TOKEN": "abc"})[:-8],  # ... while writing: the stream stops mid-value
        b"%d\nexport TOKEN=abc\n" % len(b"export TOKEN=abc\n"),  # a whole line, not the last
    ],
    ids=["nothing", "cut-mid-value", "cut-between-lines"],
)
def test_env_values_that_do_not_all_come_end_the_launcher_not_the_command(
    image_bin: Path, given: bytes
) -> None:
    """Tried: a launcher told GO_WITH_ENV_SIGNAL whose stdin then gets nothing, a payload cut in
    a value, or one cut between whole lines (its stdin then stays open, as a container's
    does). Must hold: within its wait it ends with 125 and says why, and the command never
    runs, rather than hanging or running without some of its values."""
    script = image_bin / "bin" / "ran"
    script.write_text(f"#!{BUSYBOX} sh\necho the-command-ran\n")
    script.chmod(0o755)
    proc = _launch(image_bin, ["ran"], stdin=subprocess.PIPE, env_wait_s=1)
    assert proc.stdin is not None
    try:
        _until_waiting(proc)
        os.kill(proc.pid, getattr(signal, GO_WITH_ENV_SIGNAL))
        proc.stdin.write(given)
        proc.stdin.flush()
        proc.wait(timeout=10)  # its stdin still open: the wait is what ends it
        out, err = proc.communicate()
    finally:
        _ended(proc)
    assert proc.returncode == 125
    assert b"the-command-ran" not in out
    assert b"did not come from hostd in time; the command did not run" in err


def test_env_payload_refuses_a_name_no_shell_can_export() -> None:
    """A name that is not a shell identifier would be code in the launcher's `eval`: refused."""
    assert env_payload({}) == b"20\n__potluck_env_end=1\n"
    for name in ("A;id", "1A", "A B", "A=B", ""):
        with pytest.raises(ValueError, match="cannot be exported"):
            env_payload({name: "x"})


def test_a_command_not_in_the_image_ends_the_launcher_before_it_waits(image_bin: Path) -> None:
    """Tried: the launcher of a command the image's PATH does not have. Must hold: it ends at
    once with 127 and docker's own message, having waited for nothing."""
    proc = _launch(image_bin, ["no-such-tool", "x"])
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 127
    assert out == b""
    assert err.decode().strip() == 'exec: "no-such-tool": executable file not found in $PATH'


def test_a_path_with_a_slash_is_run_as_given(image_bin: Path) -> None:
    """Tried: the command given by a relative path. Must hold: it is run from the working
    directory, as docker runs it, once told to."""
    proc = _launch(image_bin, ["./bin/ls", "rel"])
    try:
        _until_waiting(proc)
        os.kill(proc.pid, getattr(signal, GO_SIGNAL))
        out, _ = proc.communicate(timeout=10)
    finally:
        _ended(proc)
    assert out.decode().startswith("image-ls [rel] []\n")


def test_waiting_is_read_from_docker_top() -> None:
    """`docker top` shows the launcher waiting only when its own sleep runs under its shell,
    even when the engine's ps cut the lines at 80 columns; the keep-alive of an interactive
    container, a command's own sleep, a sleep cut too short to tell, or an answer without
    the columns needed do not count."""
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    init = "/sbin/docker-init -- /.potluck/busybox sh -c trap ..."
    shell = "/.potluck/busybox sh -c trap 'kill $! ..."

    def top(*processes: tuple[str, str, str]) -> dict[str, object]:
        return {
            "Titles": titles,
            "Processes": [["root", p, pp, "0", "", "?", "", c] for p, pp, c in processes],
        }

    waiting = f"{HELPER_PATH} sleep 2147483647"
    assert is_waiting(top(("1", "0", init), ("7", "1", shell), ("8", "7", waiting)))
    assert is_waiting(top(("1", "0", init), ("7", "1", shell), ("8", "7", waiting[:32])))
    assert not is_waiting(top(("1", "0", init), ("7", "1", shell), ("8", "7", waiting[:20])))
    assert not is_waiting(top(("1", "0", init), ("7", "1", shell)))
    assert not is_waiting(top(("1", "0", init), ("8", "1", waiting)))  # not under the launcher
    assert not is_waiting(top(("1", "0", init), ("7", "1", f"{HELPER_PATH} sleep infinity")))
    assert not is_waiting(top(("1", "0", init), ("7", "1", shell), ("8", "7", "sleep 2147483647")))
    assert not is_waiting({"Titles": ["PID", "CMD"], "Processes": [["8", waiting]]})
    assert not is_waiting({})
