"""What a file transfer's user reads when the engine, not the container, failed: one rule.

hostd's own SFTP server (helper_sftp.py) and the filter in front of an image's sftp-server
(sftp_filter.py) both answer for operations the engine runs or measures. The engine's words
name the member's machine (its socket's path, the container's whole id, the runtime's
"OCI runtime exec failed: ...", paths under its data-root), so they go to hostd's log and the
user reads ENGINE_FAILED; what exec_bridge said for users (ExecRefused: no running container
of the allocation here) is passed on as it is.
"""

import structlog

from potluck.hostd.exec_errors import ExecRefused

__all__ = ["ENGINE_FAILED", "said_to_user"]

log = structlog.get_logger(__name__)

#: What the user reads when the engine, not the container, failed an operation.
ENGINE_FAILED = (
    "the container's engine on its host could not run this operation; try again, and if it "
    "keeps failing, ask the member of this machine (hostd's log has the engine's words)"
)


def said_to_user(exc: Exception, *, event: str, alloc_id: str) -> str:
    """What the user reads of `exc`: its words when they were written for users (ExecRefused),
    else ENGINE_FAILED, with the engine's words logged as `event`."""
    if isinstance(exc, ExecRefused):
        return str(exc)
    log.warning(event, alloc_id=alloc_id, engine=f"{type(exc).__name__}: {exc}"[:1000])
    return ENGINE_FAILED
