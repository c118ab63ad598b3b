"""What `ops/bench footprint` reads from /proc, tried on processes this test starts."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys

from bench.footprint import cpu_ticks, measure, memory, process_tree


def test_the_tree_memory_and_cpu_of_a_process_and_its_child() -> None:
    """A Python process that starts a sleeping child and then spins: its tree holds both, its
    memory is positive with USS <= PSS <= RSS, and a window over the spin counts CPU time."""
    spin = "import subprocess, time; c = subprocess.Popen(['sleep', '30']); t = time.time()\n"
    spin += "while time.time() - t < 30: pass"
    parent = subprocess.Popen([sys.executable, "-c", spin])
    try:
        for _ in range(200):
            tree = process_tree(parent.pid)
            if len(tree) == 2:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert tree[0] == parent.pid
        assert len(tree) == 2
        own = memory(parent.pid)
        assert 0 < own.uss <= own.pss <= own.rss
        window = asyncio.run(measure(parent.pid, 0.5))
        assert window.processes == 2
        assert window.peak.rss >= window.main_peak.rss > 0
        assert window.cpu_pct > 0
        assert cpu_ticks(parent.pid) > 0
    finally:
        for pid in process_tree(parent.pid)[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        parent.kill()
        parent.wait()
    assert memory(parent.pid).rss == 0
    assert cpu_ticks(parent.pid) == 0
