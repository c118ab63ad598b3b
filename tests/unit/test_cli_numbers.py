"""Numbers out of range on the command line are usage errors, never tracebacks.

Tried: `potluck host drain`, `host leave` and `ops hosts control ... drain` with a grace past
ControlHost's bound, a negative one, nan, and one above 0 but under a second (1e-300: no grace
anybody means, yet it would be recorded as one); `alloc create` and `run` with nan or inf CPUs,
the registry with an infinite heartbeat interval (a range with no maximum). Must
hold: click's usage error (exit code 2) naming the option, no traceback; nothing is asked
of a registry, an API or a database (none runs here: the range is checked first).
"""

import pytest
from click.testing import CliRunner

from potluck.cli import GRACE_RANGE, main
from potluck.contracts.messages import MAX_GRACE_S, ControlHost

CONFIG = ["--config", "/nonexistent/hostd.toml"]
DATABASE = ["--database-url", "postgresql://nobody@127.0.0.1:1/none"]


def test_the_command_lines_bound_is_the_contracts() -> None:
    assert (GRACE_RANGE.min, GRACE_RANGE.max) == (0, MAX_GRACE_S)
    bounds = {type(m).__name__: m for m in ControlHost.model_fields["grace_s"].metadata}
    assert (bounds["Ge"].ge, bounds["Le"].le) == (0, MAX_GRACE_S)


def _usage_error(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception


@pytest.mark.parametrize(
    "grace", ["1e9", str(MAX_GRACE_S + 1), "inf", "-5", "nan", "1e-300", "0.5", "5e-324"]
)
@pytest.mark.parametrize(
    "command",
    [["host", "drain"], ["host", "leave"], ["ops", "hosts", "control", "h-1", "drain", *DATABASE]],
)
def test_a_grace_out_of_range_is_a_usage_error_naming_it(command: list[str], grace: str) -> None:
    _usage_error([*command, "--grace", grace, *CONFIG[: 2 if command[0] == "host" else 0]], "--grace")


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize(
    "command",
    [
        ["alloc", "create", "--memory", "1G", "--cpus"],
        ["run", "--tasks", "2", "--memory", "1G", "--cpus"],
        ["registry", "--database-url", "postgresql://nobody@127.0.0.1:1/none", "--heartbeat-interval"],
    ],
)
def test_a_number_that_is_not_finite_is_a_usage_error(command: list[str], value: str) -> None:
    _usage_error([*command, value], command[-1])
