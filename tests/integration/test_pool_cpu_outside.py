"""The pool's CPU time outside its containers' cgroups, read where hostd reads it (cpu_load.py):
a real container on a real engine, its shim found through /proc, and this process standing for
hostd."""

import time
from pathlib import Path

from potluck.hostd.cpu_load import OWN_PROCESS, outside_usage_ns, parse_process_cpu, shim_of
from potluck.hostd.docker_driver import DockerDriver
from tests.fixtures.docker import container_spec


def test_a_containers_shim_is_found_and_its_cpu_time_read_with_hostds_own(
    docker_driver: DockerDriver, test_image: str
) -> None:
    """What is tried: a running container of the pool (`sleep`), its init process's parent looked
    for, and the CPU time of it and of this process read twice, this process burning 0.2 s of
    CPU in between; then a PID that is no shim (this process's own) and one that is gone.
    What must hold: the parent found is the container's containerd shim (its command line
    names the container), read under its PID and start time; this process's time grew by at
    least the CPU it burnt; a process that is not a container's init has no shim, and a
    process that is gone is left out of the readings rather than failing them."""
    container_id = docker_driver.run(container_spec(test_image, "host-a"))
    pid = int(docker_driver.inspect(container_id)["State"]["Pid"])

    shim = shim_of(pid)
    assert shim is not None
    assert container_id in Path(f"/proc/{shim}/cmdline").read_bytes().decode(errors="replace")
    start, _ = parse_process_cpu(Path(f"/proc/{shim}/stat").read_text())

    before = outside_usage_ns([shim])
    burnt = time.process_time_ns()
    while time.process_time_ns() - burnt < 200_000_000:
        pass
    after = outside_usage_ns([shim])
    assert set(after) == {OWN_PROCESS, (shim, start)}
    assert after[OWN_PROCESS] - before[OWN_PROCESS] >= 200_000_000
    assert after[(shim, start)] >= before[(shim, start)]

    assert shim_of(1) is None  # the machine's init: its parent is no shim
    docker_driver.remove(container_id)
    deadline = time.monotonic() + 10  # the shim exits a moment after the engine removed the container
    while (shim, start) in outside_usage_ns([shim]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outside_usage_ns([shim]).keys() == {OWN_PROCESS}
