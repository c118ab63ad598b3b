"""An exec whose input is written into the container within the allocation's disk budget.

What the uploads hostd watches on their way in share (`potluck cp`'s put,
container_upload.py; `scp -O`'s sink, scp_sink.py; the image's sftp-server, sftp_filter.py,
which joins the budget only at its first request that can grow the disk: `budget` None until
then): the session drives them as any exec, they hold the allocation's budget
(disk_budget.py) until the exec ends, and then leave it. Each says what its input takes of
the budget (`write`) and what the end of the exec gives back (`_ended`).
"""

from potluck.hostd import disk_budget
from potluck.hostd.disk_budget import DiskBudget
from potluck.hostd.exec_bridge import ExecBridge, ExecProcess
from potluck.hostd.exec_stream import ExecSink

__all__ = ["BudgetedProcess"]


class BudgetedProcess:
    """`process` (an exec with no terminal) and the allocation's `budget`, held until it ends."""

    def __init__(
        self, bridge: ExecBridge, alloc_id: str, process: ExecProcess, budget: DiskBudget | None
    ) -> None:
        self.bridge, self.alloc_id = bridge, alloc_id
        self.process = process
        self.exec_id = process.exec_id
        self.container_id = process.container_id
        self.budget: DiskBudget | None = budget
        self.sink: ExecSink | None = None

    @property
    def finished(self) -> bool:
        return self.process.finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self.process.finished = value

    def attach(self, sink: ExecSink) -> None:
        self.sink = sink
        self.process.attach(sink)

    def write(self, data: bytes) -> None:
        self.process.write(data)

    def write_eof(self) -> None:
        self.process.write_eof()

    def pause_reading(self) -> None:
        self.process.pause_reading()

    def resume_reading(self) -> None:
        self.process.resume_reading()

    async def resize(self, width: int, height: int) -> None:
        return None  # no terminal

    async def signal(self, name: str) -> bool:
        return await self.process.signal(name)

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        status = await self.process.wait_exit(timeout)
        return status if status is None else self._ended(status)

    async def terminate(self) -> int:
        try:
            return await self.process.terminate()
        finally:
            self._ended(None)

    def close(self) -> None:
        self.process.close()

    def _ended(self, status: int | None) -> int | None:
        """The exec ended with `status` (None: terminated): the budget is left; the status the
        session reports."""
        self._leave()
        return status

    def _leave(self) -> None:
        budget, self.budget = self.budget, None
        if budget is not None:
            disk_budget.leave(self.bridge, self.alloc_id, budget)
