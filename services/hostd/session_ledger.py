"""Which sessions' execs are running, kept on disk so that a restarted hostd can end them.

While a session runs, its exec id is a file in `<state_dir>/sessions/` that
holds the container's id; it is removed once the session's process has ended
(or was ended). A hostd that starts again finds the files its previous run
left behind: nobody is attached to those processes any more, so
`ExecBridge.reap_orphans` ends them (process_tree.end_tree) and forgets them.
"""

import contextlib
from pathlib import Path

__all__ = ["SessionLedger"]


class SessionLedger:
    """The running sessions' exec ids; `directory=None` keeps no record (nothing to reap later)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        #: This run's open sessions (exec id -> container id), in memory whatever `directory` is.
        self._open: dict[str, str] = {}

    def remember(self, exec_id: str, container_id: str) -> None:
        self._open[exec_id] = container_id
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / exec_id).write_text(container_id)

    def in_session(self, container_id: str) -> bool:
        """Whether a session of this run is open in the container (log_cost.py lets it run)."""
        return container_id in self._open.values()

    def forget(self, exec_id: str) -> None:
        self._open.pop(exec_id, None)
        if self.directory is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / exec_id).unlink()

    def exec_ids(self) -> list[str]:
        """The sessions remembered and not forgotten, in a stable order."""
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(entry.name for entry in self.directory.iterdir())

    def container_of(self, exec_id: str) -> str:
        """The container a remembered exec runs in; OSError if the record cannot be read."""
        assert self.directory is not None
        return (self.directory / exec_id).read_text().strip()
