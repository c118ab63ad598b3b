"""The gateway and hostd read a session command's name the same way.

The gateway leaves a `potluck-logs` session to end at its host (which sends the container's
output to its end) instead of cutting it when the container exits. It used to split the
command on whitespace where hostd splits it as a shell would, so a quoted
`'potluck-logs'` was a logs session to hostd and an ordinary one to the gateway.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.session_commands import ARCHIVE, LOGS, command_argv, command_name
from potluck.hostd.container_logs import LogsRequest
from potluck.hostd.exec_errors import ExecRefused
from potluck.hostd.reserved_commands import reserved_command
from potluck.sshgateway.request import SessionRequest


def hostd_serves_logs(command: str | None) -> bool:
    try:
        return isinstance(reserved_command(command), LogsRequest)
    except ExecRefused as refused:  # a malformed logs command is hostd's to refuse
        return LOGS in str(refused)


@pytest.mark.parametrize(
    ("command", "logs"),
    [
        ("potluck-logs", True),
        ("potluck-logs --follow --tail 5", True),
        ("'potluck-logs' -f", True),
        ('"potluck-logs"', True),
        ("  potluck-logs  ", True),
        ("potluck-logs --tail", True),  # malformed: hostd refuses it, the gateway leaves it to hostd
        ("potluck-logsx", False),
        ("echo potluck-logs", False),
        ("'potluck-logs", False),  # does not split: the container's shell refuses it
        ("", False),
        (None, False),
    ],
)
def test_the_gateway_reads_a_logs_command_as_hostd_does(command: str | None, logs: bool) -> None:
    assert SessionRequest(command=command).reads_logs is logs
    assert hostd_serves_logs(command) is logs


@given(st.lists(st.sampled_from([LOGS, ARCHIVE, "'", '"', " ", "\\", "-f", "x", "get", "\t"]), max_size=6))
def test_any_command_is_a_logs_session_to_both_or_to_neither(parts: list[str]) -> None:
    command = "".join(parts)
    assert SessionRequest(command=command).reads_logs is hostd_serves_logs(command)


def test_a_command_that_does_not_split_has_no_name() -> None:
    assert command_argv("echo 'unclosed") is None
    assert command_name("   ") is None
    assert command_argv("potluck-archive get '/a b'") == [ARCHIVE, "get", "/a b"]
