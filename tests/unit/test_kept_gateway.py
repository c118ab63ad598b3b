"""The gateway and kept containers, through its fold (sessions.reachable, reactions.py), without servers.

What must hold: an allocation that exited with its container kept is still reachable (its
sessions go on, new ones are routed to its host), and its sessions end when it is discarded,
a `potluck-logs` one too; one that exited without being kept ends its sessions, except a
`potluck-logs` one, which its host ends after the last of the output.
"""

from dataclasses import dataclass
from datetime import timedelta

from potluck.contracts.allocation_events import AllocationDiscarded, AllocationExited, alloc_stream
from potluck.sshgateway.sessions import reachable
from tests.unit.test_gateway_projection import T0
from tests.unit.test_gateway_reactions import Log, Session, gateway_fold, running, session_on


@dataclass(eq=False)
class LogsSession(Session):
    reads_logs: bool = True


def test_a_kept_allocation_keeps_its_sessions_until_it_is_discarded() -> None:
    fold, view, sessions = gateway_fold()
    log = Log()
    fold.apply_all(running(log, "a1"))
    shell, logs = session_on("a1"), LogsSession(session_on("a1").identity)
    sessions.add(shell)
    sessions.add(logs)

    until = T0 + timedelta(hours=1)
    fold.apply(
        log(alloc_stream("a1"), AllocationExited(alloc_id="a1", host_id="h1", exit_code=0, kept_until=until))
    )
    assert reachable(view.allocation("a1"))
    assert shell.ends == []
    assert logs.ends == []

    fold.apply(
        log(alloc_stream("a1"), AllocationDiscarded(alloc_id="a1", host_id="h1", reason="keep_for is up"))
    )
    assert not reachable(view.allocation("a1"))
    message = "allocation a1's kept container was removed; the session ended"
    assert shell.ends == logs.ends == [("ALLOCATION_ENDED", message)]


def test_an_exit_without_keeping_ends_sessions_but_leaves_logs_to_the_host() -> None:
    fold, view, sessions = gateway_fold()
    log = Log()
    fold.apply_all(running(log, "a1"))
    shell, logs = session_on("a1"), LogsSession(session_on("a1").identity)
    sessions.add(shell)
    sessions.add(logs)

    fold.apply(log(alloc_stream("a1"), AllocationExited(alloc_id="a1", host_id="h1", exit_code=0)))
    assert not reachable(view.allocation("a1"))
    assert shell.ends == [("ALLOCATION_ENDED", "allocation a1 is now exited; the session ended")]
    assert logs.ends == []
