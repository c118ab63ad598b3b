"""`potluck-archive put NEED DST NAME`: `potluck cp LOCAL ALLOC:DST`'s upload, within the
allocation's disk bound.

The copy is a tar stream (its top entry NAME) on the session's input, unpacked by the
container's own tar (potluck.contracts.uploads.RECEIVE), as the container's user. What hostd
adds is the bound: the client says what the copy will take of the disk (NEED: its files' bytes
and ENTRY_BYTES for each file and directory, as the disk guard counts them, disk_bound.py,
potluck.contracts.uploads), and hostd takes that
from the allocation's disk budget (disk_budget.py, shared with its SFTP sessions) before a
byte reaches the container. A copy that does not fit what is left is refused at once, saying
how much it needs and how much is left: the container is never written past its bound, so
hostd's disk guard has no reason to stop the allocation for an upload. A stream longer than
NEED (and the tar format's own overhead, STREAM_SLACK) is cut, and the copy fails: a client
cannot say little and send more.

Where it lands, as with `docker cp`: into DST when it is a directory, else as DST (its parent
must exist). Either way it is unpacked into a temporary directory beside its place and moved
there once whole, so a copy that fails (or is cut, or whose session is lost) leaves nothing
under the destination's name. The temporary directory is removed by the script's trap when its
processes are ended, and again by hostd, which names it, once they have all ended: a trap
still removing when the grace hostd gives them ran out (a loaded machine) is killed with them,
and a session that told its user the copy failed must not leave the copy's bytes behind. Only
a directory copied onto a directory of the same name is unpacked in place, merged into it as
`docker cp` and tar do.
"""

import asyncio
import secrets
from dataclasses import dataclass

import structlog

from potluck.contracts.uploads import RECEIVE, TMP_PREFIX
from potluck.hostd import disk_budget
from potluck.hostd.budgeted_process import BudgetedProcess
from potluck.hostd.disk_budget import DiskBudget
from potluck.hostd.engine_stream import StreamedProcess
from potluck.hostd.exec_bridge import ExecBridge, ExecProcess, SessionProcess
from potluck.hostd.exec_errors import ExecError

__all__ = ["PUT_REFUSED", "STREAM_SLACK", "ArchivePut", "open_upload"]

log = structlog.get_logger(__name__)

#: The exit status of a copy refused (it does not fit what is left) or cut (it sent more than
#: it said): what a failed copy's script exits with too.
PUT_REFUSED = 1
#: What a tar stream may hold beyond NEED: its end (two zero blocks, padded to a 10 KiB
#: record). Each entry's header and padding fit in the ENTRY_BYTES NEED counts for it.
STREAM_SLACK = 64 * 1024
#: Removes a copy's temporary directory ($1 DST, $2 its name's end) wherever RECEIVE put it:
#: in DST when DST is a directory, else beside it.
_DISCARD = r'for d in "$1" "$(dirname -- "$1")"; do rm -rf -- "${d%/}/' + TMP_PREFIX + r'$2"; done'
#: How long the removal may take before hostd goes on without it.
DISCARD_WAIT_S = 30.0


@dataclass(frozen=True)
class ArchivePut:
    #: What the copy takes of the disk, as the client counted it.
    need: int
    dst: str
    name: str


class _Upload(BudgetedProcess):
    """The exec unpacking the copy, its input counted against what was taken for it; what was
    taken is given back when it ends, unless the copy landed."""

    def __init__(
        self,
        bridge: ExecBridge,
        alloc_id: str,
        process: ExecProcess,
        budget: DiskBudget,
        put: ArchivePut,
        tmp_name: str,
    ) -> None:
        super().__init__(bridge, alloc_id, process, budget)
        self.need = put.need
        self.dst = put.dst
        self.tmp_name = tmp_name
        self.sent = 0
        self.cut = False
        self._ending: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self.cut:
            return
        self.sent += len(data)
        if self.sent > self.need + STREAM_SLACK:
            self.cut = True
            log.warning("upload.stream_cut", alloc_id=self.alloc_id, need=self.need, sent=self.sent)
            if self.sink is not None:
                said = (
                    f"potluck: the copy sent more than the {self.need} bytes it said it needs: "
                    "it was cut off, nothing was copied\n"
                )
                self.sink.exec_data(said.encode(), True)
            self._ending = asyncio.ensure_future(self._end_and_discard())
            return
        self.process.write(data)

    def write_eof(self) -> None:
        if not self.cut:
            self.process.write_eof()

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        status = await self.process.wait_exit(timeout)
        if self._ending is not None:
            await self._ending
        elif status is not None and status != 0:
            await self._discard()
        return status if status is None else self._ended(status)

    async def terminate(self) -> int:
        try:
            return await self.process.terminate()
        finally:
            await self._discard()
            self._ended(None)

    async def _end_and_discard(self) -> None:
        try:
            await self.terminate()  # the discard runs however the termination went
        except (ExecError, OSError) as exc:
            log.warning("upload.terminate_failed", alloc_id=self.alloc_id, error=str(exc))

    async def _discard(self) -> None:
        """Remove the copy's temporary directory, once its processes have ended (see the module
        docstring); what was taken for it is given back after this."""
        argv = ["sh", "-c", _DISCARD, "potluck-cp", self.dst, self.tmp_name]
        try:
            status = await self.bridge.run_unattached(self.container_id, argv, wait_s=DISCARD_WAIT_S)
        except (ExecError, OSError) as exc:  # the container stopped: nothing runs to write there
            log.warning("upload.discard_failed", alloc_id=self.alloc_id, error=str(exc))
            return
        if status != 0:
            log.warning("upload.discard_failed", alloc_id=self.alloc_id, status=status)

    def _ended(self, status: int | None) -> int | None:
        if status is not None and self.cut:
            status = PUT_REFUSED
        if status != 0 and self.budget is not None:
            self.budget.give_back(self.need)  # the script removed what it unpacked
        return super()._ended(status)


def _refused(container_id: str, message: str) -> StreamedProcess:
    process = StreamedProcess("upload", container_id)
    process.emit(f"potluck: {message}\n".encode(), stderr=True)
    process.finish(PUT_REFUSED)
    return process


async def open_upload(
    bridge: ExecBridge, alloc_id: str, put: ArchivePut, env: dict[str, str]
) -> SessionProcess:
    """The copy's exec, what it needs taken from the allocation's budget; a session that ends
    at once with a message and PUT_REFUSED when it does not fit (or hostd does not know the
    bound yet); ExecRefused when the allocation's container does not run."""
    container_id = await bridge.container_for(alloc_id)
    try:
        budget = await disk_budget.join(bridge, alloc_id)
    except disk_budget.BoundUnknown as exc:
        return _refused(container_id, f"{exc}; nothing was copied")
    if not budget.claim(put.need):
        left = budget.shown_left
        disk_budget.leave(bridge, alloc_id, budget)
        bound = bridge.disk_bound_of(alloc_id)
        log.info("upload.disk_bound_reached", alloc_id=alloc_id, need=put.need, left=left, bound=bound)
        return _refused(
            container_id,
            f"{put.dst}: the copy needs {put.need} bytes of disk and allocation {alloc_id} has "
            f"{left} left of {disk_budget.files_bound(bound)}: nothing was copied; make room in it, "
            "or ask for more disk (`potluck alloc create --disk`)",
        )
    tmp_name = secrets.token_hex(8)
    argv = ["sh", "-c", RECEIVE, "potluck-cp", put.dst, put.name, tmp_name]
    try:
        process = await bridge.open(alloc_id, argv, tty=False, env=env)
    except BaseException:
        budget.give_back(put.need)
        disk_budget.leave(bridge, alloc_id, budget)
        raise
    log.info("upload.started", alloc_id=alloc_id, need=put.need, left=budget.left)
    return _Upload(bridge, alloc_id, process, budget, put, tmp_name)
