"""`potluck job show --help` explains every state a task can be in."""

from click.testing import CliRunner

from potluck.allocator.task_standing import TASK_STATES
from potluck.user.jobs import job_show


def test_the_help_names_every_task_state_the_allocator_gives() -> None:
    """Tried: `job show --help`. A data user saw `1 waiting` beside `pending` with nothing saying
    how they differ. Must hold: each of the allocator's task states is named in the help, in
    the allocator's order, and waiting and pending each say what holds the task."""
    shown = " ".join(CliRunner().invoke(job_show, ["--help"]).output.split())
    places = [shown.find(f" {state}") for state in TASK_STATES]
    assert all(p >= 0 for p in places), dict(zip(TASK_STATES, places, strict=True))
    assert places == sorted(places), dict(zip(TASK_STATES, places, strict=True))
    assert "waiting (not asked for yet: held back by --parallelism or your quota)" in shown
    assert "pending (asked for, waiting for room in the pool" in shown
