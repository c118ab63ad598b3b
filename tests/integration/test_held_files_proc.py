"""held_files.py against this machine's real /proc and cgroups: the processes found through the
first process's cgroup, or through all of /proc, and a deleted file held open counted."""

import os
import tempfile
from pathlib import Path

from potluck.hostd.held_files import container_held_bytes


def test_a_deleted_file_held_open_is_found_through_the_cgroup_and_through_proc() -> None:
    """Tried: this process writes 1 MiB to a file, removes it and keeps it open; its own cgroup
    stands for a container's (the last part of its path names it, as a container id names
    its cgroup). Must hold: found from this process as the first one (its cgroup's list of
    processes) and from a scan of all of /proc alike, at least the 1 MiB; once closed, that
    much less."""
    paths = [line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()]
    named = [path.rsplit("/", 1)[-1] for path in paths if path.strip("/")]
    assert named, "this process's cgroups have no name of their own to stand for a container's"
    cgroup = named[0]
    with tempfile.TemporaryFile(dir=Path.home()) as held:  # on a disk, not a tmpfs
        held.write(os.urandom(1 << 20))
        held.flush()
        os.fsync(held.fileno())
        through_cgroup = container_held_bytes(cgroup, os.getpid())
        through_proc = container_held_bytes(cgroup)
    assert through_cgroup >= 1 << 20, through_cgroup
    assert through_proc >= 1 << 20, through_proc
    # Other processes of the same cgroup may hold deleted files of their own: compared, not zero.
    assert through_cgroup - container_held_bytes(cgroup, os.getpid()) >= 1 << 20
