"""The owner policy's memory kept across a restart (services/hostd/policy_memory.py): pure.

A record is written as of a wall-clock instant and read back by another process, whose
monotonic clock starts elsewhere: what each test checks is the memory the new process
decides with.
"""

import json
from datetime import UTC, datetime, timedelta

from potluck.hostd.owner_policy import Decision, Memory, Readings, decide
from potluck.hostd.policy_config import OwnerPolicy
from potluck.hostd.policy_memory import memory_from_record, memory_record, remembered_decision

WRITTEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MONDAY_NOON = datetime(2026, 11, 30, 12, 0)


def test_a_hot_machine_is_still_hot_and_a_busy_owner_still_busy_after_a_restart() -> None:
    """What is tried: a memory (hot, owner busy 4 s before the write at 1.3 CPUs) written at
    monotonic 1000, through JSON, read 3 s later (wall clock) by a process whose monotonic
    clock reads 50.
    What must hold: hot still, the owner's peak kept, and the owner busy 7 s before the
    reading on the new clock (4 s before the write, 3 s since)."""
    memory = Memory(owner_busy_at=996.0, owner_peak_cpus=1.3, hot=True)
    record = json.loads(json.dumps(memory_record(memory, WRITTEN, 1000.0)))

    again = memory_from_record(record, WRITTEN + timedelta(seconds=3), 50.0)

    assert again == Memory(owner_busy_at=43.0, owner_peak_cpus=1.3, hot=True)


def test_the_restarted_decision_holds_where_the_hostd_before_would_have() -> None:
    """What is tried: throttled by heat at 90 °C (max 85) and by a busy owner; the memory
    recorded; read back by a new process, which decides at 82 °C with the owner idle 10 s
    (resume after 30 s).
    What must hold: still throttled (heat, which comes first), and with the memory forgotten
    the same readings would have said normal, which is what a restart did before."""
    policy = OwnerPolicy(max_temperature_c=85, resume_after_idle_s=30)
    _, memory = decide(policy, 2.0, Memory(), Readings(owner_cpus=1.5, temperature_c=90), MONDAY_NOON, 100.0)
    record = memory_record(memory, WRITTEN, 100.0)
    later = Readings(owner_cpus=0.0, temperature_c=82)

    restored = memory_from_record(record, WRITTEN + timedelta(seconds=10), 5.0)
    decision, _ = decide(policy, 2.0, restored, later, MONDAY_NOON, 5.0)
    forgotten, _ = decide(policy, 2.0, Memory(), later, MONDAY_NOON, 5.0)

    assert (decision.state, decision.cause) == ("throttled", "heat")
    assert forgotten.state == "normal"


def test_a_record_that_is_missing_or_unreadable_is_an_empty_memory() -> None:
    """What is tried: no record (an older hostd wrote none), not a mapping, no time, a time
    that is not one, a naive time, an owner's age that is not a number.
    What must hold: an empty memory for each, but the hot flag kept where only the owner's
    part is unreadable; a wall clock that went back counts no time since the write."""
    now = WRITTEN + timedelta(seconds=1)
    unreadable: list[object] = [None, [], {}, {"at": "yesterday"}, {"at": "2026-11-30T12:00:00", "hot": True}]
    for record in unreadable:
        assert memory_from_record(record, now, 10.0) == Memory(), record
    assert memory_from_record(
        {"at": WRITTEN.isoformat(), "hot": True, "owner_busy_ago_s": "a while"}, now, 10.0
    ) == Memory(hot=True)
    assert memory_from_record(
        {"at": WRITTEN.isoformat(), "hot": False, "owner_busy_ago_s": 2.0, "owner_peak_cpus": 1.0},
        WRITTEN - timedelta(hours=1),
        10.0,
    ) == Memory(owner_busy_at=8.0, owner_peak_cpus=1.0)


def test_the_decision_applied_last_is_remembered_only_where_it_holds_the_pool() -> None:
    """What is tried: the "policy" of status files: frozen by the battery, throttled by heat to
    0.5 CPUs (through JSON), normal, throttled with no share that reads, an unknown cause,
    nothing, and something that is no record.
    What must hold: the freeze (share 0) and the throttle (its share, its cause) are
    remembered; an unknown cause is dropped, the hold kept; normal and what does not read
    remember nothing (the new hostd starts as before, from no decision)."""
    frozen = {"state": "frozen", "cause": "battery", "reason": "on battery", "share_cpus": 0.0}
    throttled = json.loads(
        json.dumps({"state": "throttled", "cause": "heat", "reason": "hot", "share_cpus": 0.5})
    )

    assert remembered_decision(frozen) == Decision("frozen", "battery", "on battery", 0.0)
    assert remembered_decision(throttled) == Decision("throttled", "heat", "hot", 0.5)
    assert remembered_decision({**frozen, "cause": "moon"}) == Decision("frozen", None, "on battery", 0.0)
    assert remembered_decision({"state": "normal", "share_cpus": None}) is None
    assert remembered_decision({**throttled, "share_cpus": "half"}) is None
    assert remembered_decision({**throttled, "share_cpus": float("nan")}) is None
    assert remembered_decision(None) is None
    assert remembered_decision(["frozen"]) is None
