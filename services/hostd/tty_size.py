"""A session's terminal given its size before the session's program starts, on engines that cannot.

From API 1.42 (Docker 23) an engine takes an exec's terminal size with the exec
(`ConsoleSize`). Older ones (Debian 12's docker.io, 20.10, among them) size an
exec's terminal only once it started, as `docker exec -t` does too: a command
run with a terminal often ran before the resize reached it, and `ssh -t
ID@gateway 'stty size'` failed ("stty: standard input") in two runs of three;
a full-screen program drew for a terminal of 0x0 until the first window change.

On those engines the program is started by the helper busybox (helper.py),
which sets the size of its terminal and then execs the program in its place:
the same process (the pid hostd signals and ends), user, environment and
working directory. A container without the helper (made before it) has its
terminal resized after the start, as before.
"""

from collections.abc import Sequence

from potluck.hostd.exec_errors import could_not_start, not_in_container
from potluck.hostd.helper import HELPER_PATH

__all__ = ["CONSOLE_SIZE_API", "sized_argv"]

#: The first engine API that takes the terminal's size with the exec (`ConsoleSize`).
CONSOLE_SIZE_API = (1, 42)

# $1 and $2 are the size, $3 what to say if the program is not there; then the program. The
# helper's shell counted itself in SHLVL (1 when the exec had none, which is how engines start
# one): taken back, so the program counts as it would have.
_SET_SIZE_THEN_RUN = (
    f'{HELPER_PATH} stty rows "$1" cols "$2" 2>/dev/null; missing=$3; shift 3; '
    'if [ "$SHLVL" = 1 ]; then unset SHLVL; else SHLVL=$((SHLVL - 1)); fi; '
    '[ -e "$1" ] || { echo "$missing" >&2; exit 126; }; '
    'exec "$@"'
)


def sized_argv(alloc_id: str, argv: Sequence[str], width: int, height: int) -> list[str]:
    """`argv` started on a terminal of `width` x `height` by the helper. A program that is not in
    the container exits 126 saying so, as when the engine cannot start it (gateway_link)."""
    missing = could_not_start(alloc_id, not_in_container(argv[0]))
    size = [str(height), str(width)]
    return [HELPER_PATH, "sh", "-c", _SET_SIZE_THEN_RUN, "potluck-tty", *size, missing, *argv]
