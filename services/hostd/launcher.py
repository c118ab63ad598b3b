"""The launcher that lets a task's container be started ahead (issue 20) without running its
command early.

Most of `docker run` is the start (runc: shim, namespaces, cgroups, rootfs), so a container
merely created ahead saves little. A warm container of a shape with a command is therefore
started ahead too, but what it starts is this launcher, a few lines of the helper's own shell
(helper.py): it finds the command's executable, then waits, frozen with the container, doing
nothing of the command's. Taking it unfreezes it and sends it `GO_SIGNAL`; the launcher then
`exec`s the command in its own process, so from there on the container is the one `docker run`
would have made: docker-init as PID 1, the command as its only child, the same pid, the image's
ENTRYPOINT before the command, the same environment, user and working directory, the command's
exit code the container's.

Why the script looks as it does:
- The executable is found by walking `$PATH` by hand and run by its path: Debian's static
  busybox prefers its own applets, so `exec ls` would run busybox's ls, not the image's.
- The wait is a `sleep` child (the shell has no blocking builtin), killed and reaped before the
  `exec`: nothing of the launcher is left in the task, not even a zombie, and no "Terminated"
  line reaches the task's log.
- The signal's trap is set before anything else: hostd sees the launcher's `sleep` running
  (`is_waiting`) before it freezes the container, so the signal never meets a shell without it.
- A command that cannot be found ends the launcher at once with 127 and docker's message, before
  the container is frozen: the warm container is dropped and the allocation starts cold, where
  the engine refuses the start in its own words as before.
- An allocation's environment values (its user's secrets, a batch task's index) cannot be put in
  a container made before the allocation was placed. They come at the go instead:
  `GO_WITH_ENV_SIGNAL` tells the launcher to read them first from its stdin (the container is
  made with stdin open, and hostd writes `env_payload` into it), a byte count and then
  `export` lines quoted for the shell, so any value reaches the command unchanged. Values
  that do not all come within ENV_WAIT_S (hostd went away after the signal) end the launcher
  with 125 and a line saying so: the command never runs without its values, and never hangs
  waiting for them. Either go gives the command /dev/null as stdin, as `docker run` without
  `-i` does.
- The launcher's own variables would shadow the image's or the user's of the same name, so the
  PATH walk runs in a subshell and the one variable kept, the executable, has a name no one
  uses and is gone before the command runs.
"""

import re
import shlex
from collections.abc import Mapping
from typing import Any

from potluck.hostd.helper import HELPER_PATH

__all__ = ["GO_SIGNAL", "GO_WITH_ENV_SIGNAL", "env_payload", "is_waiting", "launcher_entrypoint"]

#: What tells a waiting launcher to run its command.
GO_SIGNAL = "SIGUSR1"
#: What tells a waiting launcher to read the allocation's environment from its stdin, then
#: run its command.
GO_WITH_ENV_SIGNAL = "SIGUSR2"
#: The launcher's `sleep` argument, which tells its wait apart from anything a command runs.
_WAIT_FOR = "2147483647"
_WAITING = f"{HELPER_PATH} sleep {_WAIT_FOR}"
_WAIT_PREFIX = f"{HELPER_PATH} sleep "
_SHELL_PREFIX = f"{HELPER_PATH} sh "
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: How long a launcher told GO_WITH_ENV_SIGNAL waits for the values' count, and then for the
#: values: hostd writes both at once, right after the signal; longer means hostd went away.
ENV_WAIT_S = 30
#: The launcher's own variables: names no image or user has reason to use.
_EXE = "__potluck_launcher_exe"
_ENV_END = "__potluck_env_end"
_GO = f'kill $! 2>/dev/null; wait $! 2>/dev/null; shift; set -- "${_EXE}" "$@"; unset {_EXE}'
_NO_ENV = (
    "potluck: the environment values of this allocation did not come from hostd in time; "
    "the command did not run"
)
_RUN = 'exec "$@" </dev/null'


def _read_env(wait_s: int) -> str:
    """Read and evaluate env_payload; without its last line (hostd went away before or while
    writing it) end with 125, docker's own code for "the command was not run"."""
    read = f'read -r -t {wait_s} n && {HELPER_PATH} timeout {wait_s} {HELPER_PATH} head -c "$n"'
    not_all = f'{{ echo "{_NO_ENV}" >&2; exit 125; }}'
    return f'eval "$({read})"; [ -n "${_ENV_END}" ] || {not_all}; unset {_ENV_END}'


def _script(env_wait_s: int) -> str:
    return f"""\
trap '{_GO}; {_RUN}' USR1
trap '{_GO}; {_read_env(env_wait_s)}; {_RUN}' USR2
case $1 in
*/*) {_EXE}=$1 ;;
*) {_EXE}=$(IFS=:
   for d in ${{PATH:-{_DEFAULT_PATH}}}; do
     if [ -f "$d/$1" ] && [ -x "$d/$1" ]; then printf '%s\\n' "$d/$1"; break; fi
   done) ;;
esac
if [ -z "${_EXE}" ]; then
  echo "exec: \\"$1\\": executable file not found in \\$PATH" >&2
  exit 127
fi
while :; do {_WAITING} & wait $!; done
"""


def launcher_entrypoint(image_entrypoint: list[str] | None, *, env_wait_s: int = ENV_WAIT_S) -> list[str]:
    """The ENTRYPOINT a started-ahead task container is created with; its CMD stays the
    command, so the launcher's arguments are the image's ENTRYPOINT and then the command,
    exactly what docker would have run."""
    return [HELPER_PATH, "sh", "-c", _script(env_wait_s), "potluck-launcher", *(image_entrypoint or [])]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_payload(env: Mapping[str, str]) -> bytes:
    """What a launcher told GO_WITH_ENV_SIGNAL reads from its stdin: the byte count of a
    script, then the script, one `export` per value, each value quoted for the shell, and a
    last line that tells the launcher it has all of them.
    ValueError for a name the shell cannot export (the allocator allows none)."""
    lines = []
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"environment variable name {name[:40]!r} cannot be exported by a shell")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    lines.append(f"{_ENV_END}=1\n")
    script = "".join(lines).encode()
    return b"%d\n" % len(script) + script


def is_waiting(top: Mapping[str, Any]) -> bool:
    """Does `docker top`'s answer (`ps -ef` in the container) show the launcher waiting, its
    trap set and its command found? That is its own `sleep` running as a child of the
    launcher's shell. The engine's `ps` cuts lines at its terminal's width (80 columns under
    some engines), so a command line counts when it is a cut of the expected one."""
    titles = [str(t) for t in top.get("Titles") or []]
    if not {"PID", "PPID", "CMD"} <= set(titles):
        return False
    pid, ppid, cmd = (titles.index(t) for t in ("PID", "PPID", "CMD"))
    rows = [[str(field) for field in row] for row in top.get("Processes") or [] if len(row) == len(titles)]
    commands = {row[pid]: row[cmd] for row in rows}
    return any(
        row[cmd].startswith(_WAIT_PREFIX)
        and _WAITING.startswith(row[cmd])
        and commands.get(row[ppid], "").startswith(_SHELL_PREFIX)
        for row in rows
    )
