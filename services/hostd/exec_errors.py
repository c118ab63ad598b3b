"""How the exec side fails: one root, so a session's code catches one thing.

    ExecError          the engine failed or refused; the message is for hostd's log
    +-- ExecRefused    the session cannot run; the message is safe to show the user

docker_http.py raises ExecError for any call the engine did not answer (down,
hung, not HTTP); exec_bridge.py raises ExecRefused when the allocation has no
running container of ours on this host, and ExecError for everything else.
Neither leaves hostd: gateway_link.py turns them into what the SSH user reads.
"""

__all__ = ["ExecError", "ExecRefused"]


class ExecError(Exception):
    """The engine failed or refused; the message is for hostd's log."""


class ExecRefused(ExecError):
    """The session cannot run; the message is safe to show the user."""
