"""What a container wrote between the disk guard's measures (services/hostd/write_activity.py):
the parsing, the watch, and the reads on this machine's own /proc."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.write_activity import (
    WriteSource,
    WriteWatch,
    parse_write_bytes,
    procs_file,
    read_written,
    write_source,
)

PROC_IO = """rchar: 3145\nwchar: 1048989\nsyscr: 9\nsyscw: 5\nread_bytes: 0
write_bytes: 1048576\ncancelled_write_bytes: 4096\n"""


def test_the_bytes_a_process_had_written_to_storage_are_read_from_its_io_file() -> None:
    """What is tried: a process's /proc/<pid>/io, and one without `write_bytes`. What must
    hold: `write_bytes` (counted as the page cache is dirtied), not `wchar` (every write, to
    pipes and terminals too) nor `cancelled_write_bytes`; without it, a ValueError."""
    assert parse_write_bytes(PROC_IO) == 1 << 20
    with pytest.raises(ValueError, match="no write_bytes"):
        parse_write_bytes("rchar: 1\nwchar: 2\n")


def _cgroup_dir(root: Path, *parts: str) -> Path:
    directory = root.joinpath(*parts)
    directory.mkdir(parents=True)
    (directory / "cgroup.procs").write_text("")
    return directory


def test_the_containers_processes_are_listed_by_its_memory_cgroup_on_v1_and_its_own_group_on_v2(
    tmp_path: Path,
) -> None:
    """What is tried: the same container's /proc/<pid>/cgroup on cgroup v1 (the hybrid layout: v2's
    tree under `unified` holds no controller), on v2 alone, and a process in the machine's
    own v2 group. What must hold: v1's memory group's cgroup.procs, else v2's; never the root's."""
    name = "/docker/abc123"
    v1 = {"memory": name, "cpu": name, "": name}
    hybrid = _cgroup_dir(tmp_path / "hybrid", "memory", "docker", "abc123")
    _cgroup_dir(tmp_path / "hybrid", "unified", "docker", "abc123")
    assert procs_file(v1, tmp_path / "hybrid") == hybrid / "cgroup.procs"
    v2 = _cgroup_dir(tmp_path / "v2", "system.slice", "docker-abc123.scope")
    assert procs_file({"": "/system.slice/docker-abc123.scope"}, tmp_path / "v2") == v2 / "cgroup.procs"
    (tmp_path / "v2" / "cgroup.procs").write_text("")
    assert procs_file({"": "/"}, tmp_path / "v2") is None
    assert procs_file({"": name}, tmp_path / "v2") is None  # no such group


def test_the_written_bytes_of_a_group_are_its_processes_summed_and_none_once_its_first_is_gone(
    tmp_path: Path,
) -> None:
    """What is tried, on this machine's /proc: a list of processes holding a child that writes 4 MiB
    to a file and waits (its first process), and this test's own. What must hold: the sum counts
    the child's 4 MiB, as it is written (before the disk has it); once the child is gone
    from the list, None (the container stopped or started again: found anew)."""
    target = tmp_path / "written"
    script = (
        f"import sys; f = open({str(target)!r}, 'wb'); f.write(bytes(4 << 20)); f.flush(); "
        "print('written', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"written\n"
            procs = tmp_path / "cgroup.procs"
            procs.write_text(f"{child.pid}\n{os.getpid()}\n")
            source = WriteSource(init_pid=child.pid, procs=procs, shim=None)
            written = read_written(source)
            assert written is not None
            assert written >= 4 << 20
            procs.write_text(f"{os.getpid()}\n")
            assert read_written(source) is None
        finally:
            child.kill()


def test_a_process_that_is_no_containers_is_not_taken_for_it() -> None:
    """What is tried: this test's own process given as a container's first (what an engine in a VM
    hands out: a PID of another machine's). What must hold: no source, saying why; and none for a
    container running no process."""
    found = write_source("0123456789abcdef" * 4, os.getpid())
    assert isinstance(found, str)
    assert "not this machine's" in found
    assert isinstance(write_source("0123456789abcdef" * 4, 0), str)


counts = st.lists(st.integers(min_value=0, max_value=1 << 40), min_size=1, max_size=30)


@given(reads=counts)
def test_the_watch_counts_the_growth_between_reads_and_no_drop(reads: list[int]) -> None:
    """What is tried: any run of reads of a counter. What must hold: what a container wrote
    since its last measure is the sum of what its counter grew from one read to the next, a
    drop (a writer that ended out of the count) taken as none; the first read only starts
    the count."""
    watch = WriteWatch()
    for count in reads:
        since = watch.read("a", count)
    assert since == sum(max(0, b - a) for a, b in itertools.pairwise(reads))


def test_a_measure_starts_the_count_again_and_a_container_found_anew_is_not_counted_from_zero() -> None:
    """What is tried: 10 MiB written, measured, 2 MiB more; then the container found anew with a
    counter at 500 MiB (other processes). What must hold: 2 MiB since the measure, and the new
    counter's first read adds nothing; a container gone is forgotten."""
    watch = WriteWatch()
    watch.read("a", 0)
    assert watch.read("a", 10 << 20) == 10 << 20
    watch.measured("a")
    assert watch.read("a", 12 << 20) == 2 << 20
    watch.restart("a")
    assert watch.read("a", 500 << 20) == 2 << 20
    assert watch.read("a", 501 << 20) == 3 << 20
    watch.keep_only([])
    assert watch.since("a") == 0
