"""A container that ended while no hostd watched its engine (services/hostd/unwatched_stops.py):
read as stopped on its host when it ended as a stop ends one."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from potluck.hostd.docker_driver import ManagedContainer
from potluck.hostd.unwatched_stops import stopped_unwatched

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ENDED = ManagedContainer(
    container_id="c1",
    allocation_id="a1",
    status="exited",
    running=False,
    exit_code=143,
    oom_killed=False,
    started_at=T0 - timedelta(minutes=5),
    finished_at=T0,
)


@pytest.mark.parametrize("exit_code", [143, 137])
def test_a_stop_signal_while_nobody_watched_is_a_stop_on_the_host(exit_code: int) -> None:
    """Tried: SIGTERM's and SIGKILL's exits, ended before the event stream opened, or with none
    open. Must hold: both read as stopped on the host."""
    ended = replace(ENDED, exit_code=exit_code)
    assert stopped_unwatched(ended, T0 + timedelta(seconds=1))
    assert stopped_unwatched(ended, None)


def test_what_ended_while_watched_is_left_to_the_events() -> None:
    """Tried: the same end after the stream opened. Must hold: not judged here (the stream's
    `kill` event says whether it was stopped)."""
    assert not stopped_unwatched(ENDED, T0 - timedelta(seconds=1))


@pytest.mark.parametrize(
    "ended",
    [
        replace(ENDED, exit_code=0),
        replace(ENDED, exit_code=1),
        replace(ENDED, exit_code=130),  # SIGINT: not a stop's signal
        replace(ENDED, exit_code=137, oom_killed=True),  # the OOM killer, not a stop
        replace(ENDED, finished_at=None),
        replace(ENDED, status="running", running=True, exit_code=None, finished_at=None),
    ],
)
def test_a_commands_own_end_the_oom_killer_or_no_end_time_is_not_a_stop(ended: ManagedContainer) -> None:
    assert not stopped_unwatched(ended, None)
