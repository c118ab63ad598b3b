"""`potluck run` and `potluck job ...`: batch jobs of many tasks, from the user's side.

A job is created with `POST /v1/jobs` and followed with `GET /v1/jobs/{id}`, which counts
its tasks by state and holds the first page of them; where every task is shown (`job show`,
`--json` after a wait) the rest come from `GET /v1/jobs/{id}/tasks`, a page at a time, and
the failed tasks named after a wait from its `?state=failed`. Waiting uses the API's own
`?wait=done&timeout=` in rounds (the server holds each request until the job ends or the
round is over), so a wait is no busy loop. `job wait` and
`run --wait` exit 0 only if every task succeeded, ExitCode.JOB_FAILED when a task
failed or the job was cancelled, ExitCode.TIMEOUT when `--timeout` passed first.
"""

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from potluck.cli_options import JOB_ID, FiniteRange
from potluck.contracts.job_events import RETRY_ON
from potluck.terminal import foreign
from potluck.user.cli import (
    JSON,
    LIMIT,
    QUIET_IDS,
    call_api,
    call_while_waiting,
    delete_each,
    err,
    host_text,
    ids_alone,
    key_values,
    list_rows,
    local_time,
    out,
    say_to_user,
)
from potluck.user.client import Api, ClientError, ExitCode, Login, segment
from potluck.user.ssh_keys import admitted_keys, public_key_files

#: Task states in the order a summary lists them: the finished ones first, as users look for those.
TASK_STATES = (
    "succeeded",
    "failed",
    "cancelled",
    "running",
    "pulling",
    "placed",
    "pending",
    "retrying",
    "waiting",
)
DONE_STATES = frozenset({"succeeded", "failed", "cancelled"})
#: Seconds the server holds one wait request: short on a terminal so the progress bar moves,
#: long when piped (nobody watches; fewer requests).
ROUND_ON_TERMINAL_S = 2.0
ROUND_PIPED_S = 30.0
#: Failed tasks named after a wait, so a long list of failures does not bury the summary.
FAILURES_SHOWN = 5


def counts_text(counts: Mapping[str, int]) -> str:
    """`18 succeeded, 2 failed`: the non-zero counts, finished states first."""
    parts = [f"{counts[s]} {s}" for s in TASK_STATES if counts.get(s)]
    parts += [f"{n} {s}" for s, n in sorted(counts.items()) if n and s not in TASK_STATES]
    return ", ".join(parts) or "-"


def done_count(job: Mapping[str, Any]) -> int:
    counts: Mapping[str, int] = job.get("counts") or {}
    return sum(n for s, n in counts.items() if s in DONE_STATES)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def wait_exit_code(job: Mapping[str, Any]) -> ExitCode:
    """What `job wait` exits with for the job as it was last seen."""
    if job["state"] == "succeeded":
        return ExitCode.OK
    if job["state"] == "running":
        return ExitCode.TIMEOUT
    return ExitCode.JOB_FAILED


def parse_retry_on(value: str | None) -> list[str] | None:
    """`exit,oom` as the API's list; None (the API's default) when not given."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in RETRY_ON]
    if unknown or not names:
        raise click.BadParameter(
            f"{value!r}: give a comma-separated list of {', '.join(RETRY_ON)}", param_hint="--retry-on"
        )
    return names


def _jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATE", "TASKS", "COUNTS", "IMAGE", "CREATED"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            foreign(job["id"]),
            foreign(job["state"]),
            str(job["tasks"]),
            counts_text(job.get("counts") or {}),
            foreign(job["image"]),
            local_time(job.get("created_at")),
        )
    return table


def _task_state(task: Mapping[str, Any]) -> str:
    state: str = task["state"]
    if task.get("reason") and state != "succeeded":
        return f"{state} ({task['reason']})"
    return state


def _tasks_table(tasks: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("INDEX", "STATE", "HOST", "EXIT", "ATTEMPTS", "DURATION", "ALLOCATION"):
        table.add_column(column)
    for task in sorted(tasks, key=lambda t: int(t["index"])):
        exit_code = task.get("exit_code")
        table.add_row(
            str(task["index"]),
            foreign(_task_state(task)),  # its reason may be hostd's words
            foreign(host_text(task)),
            "-" if exit_code is None else str(exit_code),
            str(task["attempts"]),
            duration_text(task.get("duration_s")),
            foreign(task.get("alloc_id") or "-"),
        )
    return table


def with_every_task(job: dict[str, Any]) -> dict[str, Any]:
    """The job with all its tasks: an answer of `GET /v1/jobs/{id}` holds the first page of them
    (`task_list`), the others are read after it from `GET /v1/jobs/{id}/tasks`, page by page."""
    following = job.get("task_list_next")
    if following is None:
        return job
    rest = list_rows(f"/v1/jobs/{segment(job['id'])}/tasks", "tasks", {}, None, after=following)
    return {**job, "task_list": [*job["task_list"], *rest], "task_list_next": None}


def _show_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(job))
        return
    out.print(_jobs_table([job]))
    if job.get("reason"):
        out.print(f"reason: {foreign(job['reason'])}", highlight=False)
    out.print(f"tasks: {counts_text(job.get('counts') or {})}", highlight=False)
    if job.get("task_list"):
        out.print(_tasks_table(job["task_list"]))


def _say_outcome(job: Mapping[str, Any]) -> None:
    """One line on stderr for a waited job, and which tasks failed: stdout stays for scripts."""
    counts: Mapping[str, int] = job.get("counts") or {}
    err.print(f"job {job['id']} {job['state']}: {counts_text(counts)}", highlight=False)
    many = counts.get("failed", 0)
    if not many:
        return
    path = f"/v1/jobs/{segment(job['id'])}/tasks?state=failed&limit={FAILURES_SHOWN}"
    try:
        failed: list[dict[str, Any]] = asyncio.run(Api(Login.load()).call("GET", path))["tasks"]
    except ClientError as exc:
        # The job's outcome is known and its exit code stands; only the names are missing.
        err.print(f"  (its failed tasks could not be read: {foreign(exc)})", highlight=False)
        return
    for task in failed:
        code = task.get("exit_code")
        why = task.get("reason") or (f"exit code {code}" if code is not None else "failed")
        err.print(
            f"  task {task['index']} failed after {task['attempts']} attempt(s): {foreign(why)} "
            f"(`potluck logs {task['alloc_id']}`)",
            highlight=False,
        )
    if many > len(failed):
        err.print(f"  ... and {many - len(failed)} more (`potluck job show {job['id']}`)")


def wait_for_job(job_id: str, timeout: float | None) -> dict[str, Any]:
    """The job once it ended, or as it was when `timeout` seconds passed; a progress bar of
    finished tasks on stderr when that is a terminal."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job: dict[str, Any] = call_api("GET", f"/v1/jobs/{segment(job_id)}")
    progress = (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        if err.is_terminal
        else None
    )
    round_s = ROUND_ON_TERMINAL_S if progress is not None else ROUND_PIPED_S
    bar = progress.add_task(f"job {job_id}", total=job["tasks"]) if progress is not None else None
    if progress is not None:
        progress.start()
    try:
        while job["state"] == "running":
            if progress is not None and bar is not None:
                progress.update(bar, completed=done_count(job))
            left = round_s if deadline is None else min(round_s, deadline - time.monotonic())
            if left < 0.1:  # what would be asked for is "0.0": no request worth making
                return job
            job = call_while_waiting(
                f"/v1/jobs/{segment(job_id)}?wait=done&timeout={left:.1f}", left, until=deadline
            )
        return job
    finally:
        if progress is not None:
            progress.stop()


def _wait_and_exit(job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for the job, print it as asked and exit with its code."""
    try:
        job = wait_for_job(job_id, timeout)
    except KeyboardInterrupt:
        # Ctrl-C stops the waiting, not the job: say so rather than print a traceback.
        err.print(f"stopped waiting; job {job_id} goes on (`potluck job wait {job_id}`)", highlight=False)
        sys.exit(130)
    code = wait_exit_code(job)
    if as_json:
        click.echo(json.dumps(with_every_task(job)))
    if code is ExitCode.TIMEOUT:
        err.print(
            f"timed out after {timeout:g}s: job {job['id']} is still running "
            f"({counts_text(job.get('counts') or {})}); `potluck job wait {job['id']}` waits again",
            highlight=False,
        )
    else:
        _say_outcome(job)
    sys.exit(int(code))


WAIT_TIMEOUT = click.option(
    "--timeout",
    type=FiniteRange(min=1),
    default=None,
    help="Give up waiting after this many seconds (exit code 4) [default: wait until it ends].",
)


@click.command(name="run")
@click.option("--tasks", type=click.IntRange(min=1), required=True, help="How many tasks (0..N-1).")
@click.option("--cpus", type=FiniteRange(min=0.01), required=True, help="CPU cores of each task.")
@click.option("--memory", required=True, help="Memory of each task, e.g. 512M or 4G.")
@click.option(
    "--disk",
    default="1G",
    show_default=True,
    help="Disk of each task, e.g. 10G (its output log takes a 16th, at most 30 MiB).",
)
@click.option("--image", required=True, help="Container image every task runs.")
@click.option("--env", "env", multiple=True, help="Environment variable KEY=VALUE (repeatable).")
@click.option("--constraint", "constraints", multiple=True, help="Host label KEY=VALUE that must match.")
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    callback=public_key_files,
    help="Public key file allowed to SSH into a task (repeatable). Default: those of "
    "~/.ssh/id_rsa.pub, id_ecdsa.pub and id_ed25519.pub that exist.",
)
@click.option("--lifetime", default="1h", show_default=True, help="Each attempt's longest run, e.g. 30m.")
@click.option("--parallelism", type=click.IntRange(min=1), default=None, help="Most tasks running at once.")
@click.option(
    "--retries", type=click.IntRange(min=0), default=0, show_default=True, help="Retries of a failed task."
)
@click.option(
    "--retry-on",
    default=None,
    help="What is retried, comma-separated: exit (non-zero exit), oom, failed (its host could not "
    "run it), lost (its host was lost; re-queued without using --retries; name it in a list of your "
    "own to keep it) [default: lost].",
)
@click.option("--deadline", default=None, help="Cancel the job if not done this long after now, e.g. 6h.")
@click.option(
    "--keep-for",
    default=None,
    help="Keep each finished task's container this long for `potluck cp`/`potluck logs`; its disk stays "
    "counted on its host meanwhile [default: 1h].",
)
@click.option("--network/--no-network", default=False, show_default=True, help="Outbound network.")
@click.option("--wait/--no-wait", default=False, help="Wait until the job ends and exit like `job wait`.")
@WAIT_TIMEOUT
@JSON
@click.argument("command", nargs=-1, required=True)
def run(
    tasks: int,
    cpus: float,
    memory: str,
    disk: str,
    image: str,
    env: tuple[str, ...],
    constraints: tuple[str, ...],
    ssh_keys: tuple[Path, ...],
    lifetime: str,
    parallelism: int | None,
    retries: int,
    retry_on: str | None,
    deadline: str | None,
    keep_for: str | None,
    network: bool,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND (after --) as a job of TASKS tasks and print the job's id.

    COMMAND is required: a task ends when it ends (to run the image's own command, name it).

    Each task is a container of its own with POTLUCK_TASK_INDEX (0..TASKS-1) and
    POTLUCK_JOB_ID in its environment. Follow it with `potluck job show`/`job wait`.
    """
    body: dict[str, Any] = {
        "tasks": tasks,
        "cpus": cpus,
        "memory": memory,
        "disk": disk,
        "image": image,
        "command": list(command),
        "env": key_values(env, "--env"),
        "constraints": key_values(constraints, "--constraint"),
        "ssh_keys": admitted_keys(ssh_keys, say_to_user),
        "lifetime": lifetime,
        "parallelism": parallelism,
        "retries": retries,
        "network": network,
    }
    # Absent options leave the API's defaults (its OpenAPI document says them) in charge.
    optional = {"retry_on": parse_retry_on(retry_on), "deadline": deadline, "keep_for": keep_for}
    body.update({k: v for k, v in optional.items() if v is not None})
    # One key for every try, as `alloc create` does: a job sent again is never run twice.
    created: dict[str, Any] = call_api("POST", "/v1/jobs", body, idempotency_key=str(uuid.uuid4()))
    if not wait:
        click.echo(json.dumps(created) if as_json else created["id"])
        return
    if not as_json:
        click.echo(created["id"])
    _wait_and_exit(created["id"], timeout, as_json)


@click.group()
def job() -> None:
    """Follow and cancel your batch jobs (`potluck run` creates them)."""


@job.command(name="ls")
@LIMIT
@JSON
@QUIET_IDS
def job_ls(limit: int | None, as_json: bool, quiet: bool) -> None:
    """Your jobs, oldest first."""
    quiet = ids_alone(quiet, as_json)
    jobs = list_rows("/v1/jobs", "jobs", {}, limit)
    if as_json:
        click.echo(json.dumps(jobs))
    elif quiet:
        click.echo("".join(f"{j['id']}\n" for j in jobs), nl=False)
    else:
        out.print(_jobs_table(jobs))


@job.command(name="show")
@click.argument("job_id", type=JOB_ID)
@JSON
def job_show(job_id: str, as_json: bool) -> None:
    """A job: its tasks counted by state, then each task's state, host, exit code, attempts.

    \b
    A task's state: waiting (not asked for yet: held back by --parallelism or
    your quota), pending (asked for, waiting for room in the pool: `potluck alloc
    show ALLOC` says why), placed, pulling, running, retrying (its attempt ended;
    the next is asked for after a pause), succeeded, failed (for good), cancelled."""
    _show_job(with_every_task(call_api("GET", f"/v1/jobs/{segment(job_id)}")), as_json)


@job.command(name="rm")
@click.argument("job_ids", metavar="JOB_ID...", nargs=-1, required=True, type=JOB_ID)
@JSON
def job_rm(job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel jobs: what still runs is stopped, what waits is never started. The stopped
    containers their finished tasks keep (for `potluck cp` and `potluck logs`) are removed, for
    a job that had already ended too.

    Each is cancelled even if another is not yours; the exit code is then the first failure's."""
    if len(job_ids) == 1:
        removed = call_api("DELETE", f"/v1/jobs/{segment(job_ids[0])}")
        if removed.get("state") not in (None, "cancelled"):
            err.print(
                f"job {foreign(job_ids[0])} had already ended ({foreign(str(removed['state']))}): nothing "
                "was cancelled; the containers its tasks kept for results were removed",
                highlight=False,
                soft_wrap=True,
            )
        _show_job(removed, as_json)
        return
    delete_each([f"/v1/jobs/{segment(job_id)}" for job_id in job_ids], as_json, _jobs_table)


@job.command(name="wait")
@click.argument("job_id", type=JOB_ID)
@WAIT_TIMEOUT
@JSON
def job_wait(job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait until a job ends: exit 0 if every task succeeded, 5 if one failed or the job was
    cancelled, 4 if --timeout passed first (a progress bar on a terminal meanwhile)."""
    _wait_and_exit(job_id, timeout, as_json)
