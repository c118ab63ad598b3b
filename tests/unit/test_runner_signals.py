"""A service stopped by a signal says so in its log (potluck/runner.py), whatever the service."""

import signal
import subprocess
import sys

#: A service whose work is waiting to be stopped: it prints "ready" once its handlers are set.
SERVICE = """
import asyncio
from potluck.runner import run_until_signalled

async def main(stop: asyncio.Event) -> None:
    print("ready", flush=True)
    await stop.wait()
    print("returned", flush=True)

asyncio.run(run_until_signalled(main))
"""


#: The same service, still ending for a moment once its work has returned (closing its log,
#: flushing its traces): it prints "ending" then.
ENDING = f"""{SERVICE}
import time
print("ending", flush=True)
time.sleep(2)
"""


def _stopped_by(sig: signal.Signals, *, again: bool = False) -> str:
    service = subprocess.Popen(
        [sys.executable, "-c", ENDING if again else SERVICE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert service.stdout is not None
        assert service.stdout.readline().strip() == "ready"
        service.send_signal(sig)
        if again:
            while (line := service.stdout.readline()) and line.strip() != "ending":
                pass
            service.send_signal(signal.SIGTERM)
            service.send_signal(signal.SIGINT)
        out, _ = service.communicate(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    assert service.returncode == 0, out
    return out


def test_a_signal_is_named_in_the_log_before_the_service_returns() -> None:
    """Tried: a service under run_until_signalled gets SIGTERM (a systemd stop); another SIGINT
    (Ctrl-C on `potluck join --start`).
    Must hold: each logs `process.stopping` naming its signal, once, before its work returns, and
    exits 0 (before, hostd and the others ended without a line, so a member's log read as if
    the process had died)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = _stopped_by(sig)
        lines = out.splitlines()
        said = [line for line in lines if "process.stopping" in line]
        assert len(said) == 1, out
        assert sig.name in said[0], out
        assert lines.index(said[0]) < lines.index("returned"), out


def test_a_second_signal_while_the_process_ends_does_not_kill_it() -> None:
    """Tried: SIGTERM stops the service; once its work has returned and while the process is
    still ending, a supervisor's second SIGTERM and a second Ctrl-C (SIGINT) come.
    Must hold: the process still exits 0 (before, the default action killed it, exit -15, and
    its clean stop read as a crash)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        _stopped_by(sig, again=True)
