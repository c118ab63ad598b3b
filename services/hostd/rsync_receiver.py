"""`rsync -e ssh LOCAL ALLOC:PATH` into a container, within what is left of its disk bound.

The client runs `rsync --server ... . PATH` in the container (the image's own rsync), which
writes what it is sent, so an upload that fit the allocation's bound but not what is left of
it was written whole, and hostd's disk guard then stopped the allocation. rsync's protocol is
not read here (its file list is compressed, varint-encoded and multiplexed); what bounds what
a receiving rsync writes is what it is sent: each file's data comes as literal bytes, so hostd
takes every byte of the session's input from the allocation's disk budget (disk_budget.py,
shared with SFTP, `scp -O` and `potluck cp`) before passing it on. The file list and the
protocol's own bytes are counted too: a little more than the files take, never less. When the
budget is spent the input is ended there (what does not fit never reaches rsync): rsync sees
its stream end, fails, and removes the temporary file it was writing (the destination's name
is untouched), hostd says why on stderr, and the allocation runs on.

For the input to bound what is written, three of rsync's ways are changed or refused:
- delta transfer: a file already at the destination is the basis of the new one, which rsync
  rebuilds from its blocks and a few bytes of difference, so a small input can write a large
  file. The receiving server is run with `--whole-file`: the receiver asks for no basis
  checksums, and the sender sends every byte (rsync's own default between local paths).
- compression (`-z`, `--compress-level`, ...): a few compressed bytes can inflate to any
  size. Refused, saying so: run rsync without it (the link to the gateway is fast).
- `--copy-dest`: unchanged files are copied from another directory of the container without
  passing hostd. Refused, saying so.
`--partial` and `--inplace` keep what arrived of a file cut off, as the user asked (within
the bound). Each file's entry (ENTRY_BYTES as the guard counts it) is not seen here: a
transfer of many small files can still pass what is left by that much per file.
Only `rsync --server` run as the command itself is watched (`--rsync-path` naming another
program, or a shell around it, runs as any other command).
"""

import shlex

import structlog

from potluck.contracts.session_commands import command_argv
from potluck.hostd import disk_budget
from potluck.hostd.budgeted_process import BudgetedProcess
from potluck.hostd.disk_budget import DiskBudget, files_bound
from potluck.hostd.engine_stream import StreamedProcess
from potluck.hostd.exec_bridge import ExecBridge, ExecProcess, SessionProcess

__all__ = ["REFUSED", "open_rsync_receiver", "rsync_receiver"]

log = structlog.get_logger(__name__)

#: The exit status of a receiving rsync refused before it ran (rsync's own for a usage error).
REFUSED = 1
#: Long options that make a receiving rsync write what did not pass hostd.
_COMPRESS = ("--compress", "--zc", "--zl", "--new-compress", "--old-compress", "--compress-choice")


def rsync_receiver(command: str | None) -> list[str] | None:
    """The words of `command` when it is a receiving rsync server (`rsync --server` without
    `--sender`), else None."""
    argv = command_argv(command)
    if argv is None or len(argv) < 2 or argv[0].rsplit("/", 1)[-1] != "rsync" or argv[1] != "--server":
        return None
    return None if "--sender" in argv else argv


def _refusal(argv: list[str]) -> str | None:
    """Why rsync's options cannot be held to the bound (module docstring), if they cannot."""
    for arg in argv[2:]:
        if arg == ".":  # the options end here; the paths follow
            break
        if arg.startswith(_COMPRESS):
            return _COMPRESSED
        if arg.startswith("--copy-dest"):
            return (
                "rsync's --copy-dest copies files inside the allocation without them passing hostd, "
                "which holds uploads to the allocation's disk bound: run rsync without it"
            )
        if arg.startswith("-") and not arg.startswith("--") and "z" in arg[1:].split("e", 1)[0]:
            return _COMPRESSED
    return None


_COMPRESSED = (
    "rsync's compression (-z) is not taken for uploads into an allocation: hostd counts the bytes "
    "that arrive against its disk bound, and compressed bytes do not bound what is written; run "
    "rsync without -z"
)


class _RsyncReceiver(BudgetedProcess):
    """The exec of a receiving rsync, its input taken from the allocation's budget."""

    def __init__(self, bridge: ExecBridge, alloc_id: str, process: ExecProcess, budget: DiskBudget) -> None:
        super().__init__(bridge, alloc_id, process, budget)
        self.cut = False

    def write(self, data: bytes) -> None:
        if self.cut:
            return
        budget = self.budget
        if budget is None or budget.claim(len(data)):
            self.process.write(data)
            return
        self.cut = True
        left = budget.shown_left
        bound = self.bridge.disk_bound_of(self.alloc_id)
        log.info("rsync_receiver.disk_bound_reached", alloc_id=self.alloc_id, left=left)
        if self.sink is not None:
            said = (
                f"potluck: rsync: allocation {self.alloc_id} has {left} bytes left of {files_bound(bound)} "
                "and this upload needs more: it was cut off there (rsync removes "
                "the file it was writing)\n"
            )
            self.sink.exec_data(said.encode(), True)
        self.process.write_eof()  # rsync sees its input end, fails, and cleans up

    def write_eof(self) -> None:
        if not self.cut:
            self.process.write_eof()


def _refused(container_id: str, message: str) -> StreamedProcess:
    process = StreamedProcess("rsync", container_id)
    process.emit(f"potluck: {message}\n".encode(), stderr=True)
    process.finish(REFUSED)
    return process


async def open_rsync_receiver(
    bridge: ExecBridge, alloc_id: str, argv: list[str], env: dict[str, str]
) -> SessionProcess:
    """`argv` (a receiving rsync server, `rsync_receiver`) run in the container with
    `--whole-file`, its input taken from the allocation's budget; a session that ends at once
    saying why when its options are refused or hostd does not know the bound yet."""
    container_id = await bridge.container_for(alloc_id)
    refusal = _refusal(argv)
    if refusal is not None:
        log.info("rsync_receiver.refused", alloc_id=alloc_id, reason=refusal)
        return _refused(container_id, refusal)
    try:
        budget = await disk_budget.join(bridge, alloc_id)
    except disk_budget.BoundUnknown as exc:
        return _refused(container_id, str(exc))
    command = shlex.join([argv[0], "--server", "--whole-file", *argv[2:]])
    try:
        opened = await bridge.open(alloc_id, ["/bin/sh", "-c", command], tty=False, env=env)
    except BaseException:
        disk_budget.leave(bridge, alloc_id, budget)
        raise
    return _RsyncReceiver(bridge, alloc_id, opened, budget)
