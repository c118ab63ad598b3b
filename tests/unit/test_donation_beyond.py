"""What a donation promises past the machine its Docker engine runs on (config.Donation.beyond),
the check `potluck join` makes before a token is spent and hostd at every start."""

from potluck.hostd.config import Donation
from potluck.hostd.docker_driver import EngineMachine

GIB = 1 << 30
LAPTOP = EngineMachine(cpus=8, memory_bytes=16 * GIB, disk_bytes=250 * GIB)


def test_a_donation_within_the_machine_promises_nothing_past_it() -> None:
    assert Donation(cpus=8, memory="16G", disk="250G").beyond(LAPTOP) == []


def test_disk_past_the_file_system_the_engine_keeps_its_data_on_is_named() -> None:
    """Tried: 100T of disk on a laptop whose engine keeps its data on a 250G file system (before,
    the disk was never compared and the pool placed more than the disk held).
    Must hold: the disk is named with the file system's size, and only it."""
    [problem] = Donation(cpus=1, memory="2G", disk="100T").beyond(LAPTOP)
    assert problem.startswith("donate.disk: 100T is more than the 250.0G file system"), problem


def test_an_engine_whose_disk_this_machine_cannot_see_is_not_judged_on_disk() -> None:
    """An engine reached by tcp:// or in a VM says no size: only CPUs and memory are compared."""
    remote = EngineMachine(cpus=8, memory_bytes=16 * GIB)
    assert Donation(cpus=1, memory="2G", disk="100T").beyond(remote) == []
    assert Donation(cpus=1, memory="2G", disk="100T").beyond(None) == []


def test_every_field_past_the_machine_is_named_in_the_same_words() -> None:
    problems = Donation(cpus=9, memory="32G", disk="1T").beyond(LAPTOP)
    assert [p.split(":")[0] for p in problems] == ["donate.cpus", "donate.memory", "donate.disk"]
    assert all("donate at most" in p for p in problems), problems
