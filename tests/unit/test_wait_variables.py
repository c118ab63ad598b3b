"""The variables that shorten a wait for tests: unset, the production wait; a bad value named."""

import click
import pytest

from potluck.cli_options import OPERATOR_CONNECT_TIMEOUT_S, operator_connect_timeout
from potluck.localstack import LocalStackError
from potluck.up import ONLINE_TIMEOUT_S, online_timeout


def test_the_waits_are_the_production_ones_unless_a_variable_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried: POTLUCK_UP_ONLINE_TIMEOUT_S and POTLUCK_OPERATOR_CONNECT_TIMEOUT_S unset, empty,
    then 2.5. Must hold: unset or empty, `potluck up` waits 60 s for its hostd and an operator's
    command 10 s for the log; set, each waits what it says."""
    for name in ("POTLUCK_UP_ONLINE_TIMEOUT_S", "POTLUCK_OPERATOR_CONNECT_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    assert (online_timeout(), operator_connect_timeout()) == (ONLINE_TIMEOUT_S, OPERATOR_CONNECT_TIMEOUT_S)
    assert (ONLINE_TIMEOUT_S, OPERATOR_CONNECT_TIMEOUT_S) == (60.0, 10.0)
    monkeypatch.setenv("POTLUCK_UP_ONLINE_TIMEOUT_S", "")
    monkeypatch.setenv("POTLUCK_OPERATOR_CONNECT_TIMEOUT_S", "")
    assert (online_timeout(), operator_connect_timeout()) == (60.0, 10.0)
    monkeypatch.setenv("POTLUCK_UP_ONLINE_TIMEOUT_S", "2.5")
    monkeypatch.setenv("POTLUCK_OPERATOR_CONNECT_TIMEOUT_S", "2.5")
    assert (online_timeout(), operator_connect_timeout()) == (2.5, 2.5)


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_wait_that_is_no_positive_number_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Tried: each variable set to a word, 0, a negative number, nan and inf. Must hold: each
    is refused naming the variable and the value given, and what to set instead."""
    monkeypatch.setenv("POTLUCK_UP_ONLINE_TIMEOUT_S", value)
    with pytest.raises(LocalStackError, match=rf"POTLUCK_UP_ONLINE_TIMEOUT_S='{value}'.*set it to e.g. 60"):
        online_timeout()
    monkeypatch.setenv("POTLUCK_OPERATOR_CONNECT_TIMEOUT_S", value)
    with pytest.raises(
        click.UsageError, match=rf"POTLUCK_OPERATOR_CONNECT_TIMEOUT_S='{value}'.*set it to e.g. 10"
    ):
        operator_connect_timeout()
