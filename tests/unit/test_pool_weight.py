"""The pool's parent cgroup and its weight file (services/hostd/pool_weight.py), on sysfs-shaped
directories: the lowest weight is written to the pool's own parent, never to another group's."""

from pathlib import Path

import pytest

from potluck.hostd.pool_weight import cgroup_parent, lower_parent_weight, parent_weight_file

V1 = "12:pids:/potluck/abc\n4:cpu:/potluck/abc\n3:cpuacct:/potluck/abc\n0::/\n"
V2 = "0::/potluck.slice/docker-abc.scope\n"


def test_the_parent_follows_the_engine_s_cgroup_driver() -> None:
    """cgroupfs engines get a /potluck parent, systemd ones a slice; unknown drivers cgroupfs's."""
    assert cgroup_parent("cgroupfs") == "/potluck"
    assert cgroup_parent("systemd") == "potluck.slice"
    assert cgroup_parent("something-new") == "/potluck"


def test_v1_writes_cpu_shares_of_the_pool_s_parent(tmp_path: Path) -> None:
    """cgroup v1: the parent's cpu.shares, the lowest value (2)."""
    (tmp_path / "cpu/potluck/abc").mkdir(parents=True)
    (tmp_path / "cpu/potluck/cpu.shares").write_text("1024\n")
    assert parent_weight_file(V1, tmp_path) == (tmp_path / "cpu/potluck/cpu.shares", 2)


def test_v2_writes_cpu_weight_of_the_pool_s_slice(tmp_path: Path) -> None:
    """cgroup v2 with systemd: the slice's cpu.weight, the lowest value (1)."""
    (tmp_path / "potluck.slice/docker-abc.scope").mkdir(parents=True)
    (tmp_path / "potluck.slice/cpu.weight").write_text("100\n")
    assert parent_weight_file(V2, tmp_path) == (tmp_path / "potluck.slice/cpu.weight", 1)


@pytest.mark.parametrize(
    "proc_cgroup",
    [
        "4:cpu:/docker/abc\n0::/\n",  # the engine's own parent: the member's containers share it
        "0::/system.slice/docker-abc.scope\n",
        "4:cpu:/\n",  # the root
        "",
    ],
)
def test_no_other_group_s_weight_is_ever_touched(tmp_path: Path, proc_cgroup: str) -> None:
    """A process outside the pool's parents yields no file to write."""
    for d in ("cpu/docker/abc", "system.slice/docker-abc.scope", "cpu"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    (tmp_path / "cpu/docker/cpu.shares").write_text("1024\n")
    (tmp_path / "system.slice/cpu.weight").write_text("100\n")
    assert parent_weight_file(proc_cgroup, tmp_path) is None


def test_a_process_that_is_gone_writes_nothing(tmp_path: Path) -> None:
    """No such process (it ended): nothing is written and nothing raised."""
    assert lower_parent_weight(2**22 + 12345, tmp_path) is None
