"""The pure parts of `potluck run` / `potluck job`: exit codes, option parsing, summaries."""

import click
import pytest
from click.testing import CliRunner

from potluck.cli import main
from potluck.user.client import ExitCode
from potluck.user.jobs import counts_text, done_count, duration_text, parse_retry_on, wait_exit_code


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("succeeded", ExitCode.OK),
        ("failed", ExitCode.JOB_FAILED),
        ("cancelled", ExitCode.JOB_FAILED),
        ("running", ExitCode.TIMEOUT),
    ],
)
def test_wait_exits_zero_only_for_a_job_whose_every_task_succeeded(state: str, code: ExitCode) -> None:
    """Each job state maps to its own code; the failure and timeout codes differ from each
    other and from the API's refusal (1) and wrong usage (2)."""
    assert wait_exit_code({"state": state}) is code
    assert len({ExitCode.JOB_FAILED, ExitCode.TIMEOUT, ExitCode.REFUSED, ExitCode.USAGE}) == 4


def test_retry_on_is_split_on_commas_and_checked_before_any_request() -> None:
    """Known names pass in order; an unknown or empty one is a usage error naming the choices."""
    assert parse_retry_on("exit, oom,lost") == ["exit", "oom", "lost"]
    assert parse_retry_on(None) is None
    for bad in ("exit,segfault", " , "):
        with pytest.raises(click.BadParameter, match="exit, oom, lost, failed"):
            parse_retry_on(bad)


def test_counts_list_finished_states_first_and_skip_zeroes() -> None:
    counts = {"running": 2, "failed": 1, "succeeded": 17, "waiting": 0}
    assert counts_text(counts) == "17 succeeded, 1 failed, 2 running"
    assert counts_text({}) == "-"
    assert done_count({"counts": counts}) == 18


def test_durations_read_as_seconds_minutes_or_hours() -> None:
    assert [duration_text(s) for s in (None, 1.25, 184, 3720)] == ["-", "1.2s", "3m04s", "1h02m"]


def test_bad_key_value_is_refused_before_anything_is_sent() -> None:
    """`--env NOEQUALS` fails as wrong usage (exit 2) naming the option, without a login."""
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--tasks",
            "2",
            "--cpus",
            "1",
            "--memory",
            "1G",
            "--image",
            "x",
            "--env",
            "NOEQUALS",
            "--",
            "true",
        ],
        env={"POTLUCK_CONFIG": "/nonexistent/client.toml", "POTLUCK_URL": "", "POTLUCK_TOKEN": ""},
    )
    assert result.exit_code == 2, result.output
    assert "--env" in result.output
    assert "KEY=VALUE" in result.output
