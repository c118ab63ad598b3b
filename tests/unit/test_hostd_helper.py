"""Which busybox hostd offers to containers (services/hostd/helper.py)."""

import os
import shutil
from pathlib import Path

from potluck.hostd.helper import find_helper
from potluck.kernel.elf import is_static_elf


def test_the_static_busybox_of_this_machine_is_offered() -> None:
    """ops/setup installs busybox-static: it is found, and it is a static executable."""
    found = find_helper()

    assert found is not None
    assert is_static_elf(Path(found).read_bytes())


def test_a_setuid_a_writable_or_a_dynamic_binary_is_not_offered(tmp_path: Path) -> None:
    """A copy with setuid, one writable by others, and a dynamic executable (python3) are each
    refused, so no container ever gets them."""
    setuid = tmp_path / "setuid"
    shutil.copy("/bin/busybox", setuid)
    setuid.chmod(0o4755)
    writable = tmp_path / "writable"
    shutil.copy("/bin/busybox", writable)
    writable.chmod(0o757)
    dynamic = Path(os.path.realpath(shutil.which("python3") or "/usr/bin/python3"))

    assert find_helper((str(setuid),)) is None
    assert find_helper((str(writable),)) is None
    assert find_helper((str(dynamic),)) is None
    assert not is_static_elf(dynamic.read_bytes()[:65536])
    assert find_helper((str(setuid), "/bin/busybox")) is not None


def test_a_fifo_in_the_helpers_place_is_refused_without_waiting_on_it(tmp_path: Path) -> None:
    """Tried: a named pipe where busybox is looked for (no writer ever opens it). Must hold: it is
    refused at once (opening it to read its head would wait for a writer for ever) and the next
    candidate is offered."""
    fifo = tmp_path / "busybox"
    os.mkfifo(fifo)

    assert find_helper((str(fifo),)) is None
    assert find_helper((str(fifo), "/bin/busybox")) is not None
