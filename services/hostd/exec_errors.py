"""How the exec side fails: one root, so a session's code catches one thing.

    ExecError          the engine failed or refused; the message is for hostd's log
    +-- ExecRefused    the session cannot run; the message is safe to show the user

docker_http.py raises ExecError for any call the engine did not answer (down,
hung, not HTTP); exec_bridge.py raises ExecRefused when the allocation has no
running container of ours on this host, and ExecError for everything else.
Neither leaves hostd: gateway_link.py turns them into what the SSH user reads.
"""

__all__ = ["ExecError", "ExecRefused", "could_not_start", "not_in_container"]


class ExecError(Exception):
    """The engine failed or refused; the message is for hostd's log."""


class ExecRefused(ExecError):
    """The session cannot run; the message is safe to show the user."""


def not_in_container(program: str) -> str:
    """Why a session's program did not start, when it is not in the container."""
    return (
        f"{program} is not in the container: sessions (a shell, a command, sftp) run /bin/sh, "
        "so the allocation's image needs one"
    )


def could_not_start(alloc_id: str, why: str) -> str:
    """The line a user reads when their session's program could not start."""
    return f"potluck: the session could not start in allocation {alloc_id}: {why}"
