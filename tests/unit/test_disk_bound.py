"""What counts against an allocation's disk bound (services/hostd/disk_bound.py), without an engine."""

from hypothesis import assume, given
from hypothesis import strategies as st

from potluck.hostd.disk_bound import (
    ENTRY_BYTES,
    OUTSIDE_LAYER_FILES,
    OUTSIDE_LAYER_SLACK,
    SOONEST_MEASURE_S,
    disk_overrun,
    entries_most,
    measure_now,
    needs_layer_measured,
    next_measure_in,
)

sizes = st.integers(min_value=0, max_value=1 << 40)
outsides = st.dictionaries(st.sampled_from(OUTSIDE_LAYER_FILES), sizes)
rates = st.floats(min_value=-1e10, max_value=1e10, allow_nan=False)
intervals = st.floats(min_value=0.05, max_value=3600)


@given(layer=sizes, outside=outsides, bound=sizes)
def test_past_the_bound_exactly_when_the_layer_and_the_files_outside_it_together_are(
    layer: int, outside: dict[str, int], bound: int
) -> None:
    assert (disk_overrun(layer, outside, bound) is not None) == (layer + sum(outside.values()) > bound)


@given(layer=sizes, outside=outsides, bound=sizes, entries=st.integers(min_value=0, max_value=1 << 30))
def test_each_entry_of_the_layer_counts_a_block_and_no_more_than_fit_need_counting(
    layer: int, outside: dict[str, int], bound: int, entries: int
) -> None:
    """Past the bound exactly when the layer's bytes, a block for each of its entries and the
    files outside it together are; and `entries_most` entries are within it, one more past."""
    past = layer + entries * ENTRY_BYTES + sum(outside.values()) > bound
    assert (disk_overrun(layer, outside, bound, entries=entries) is not None) == past
    most = entries_most(layer, outside, bound)
    if layer + sum(outside.values()) <= bound:
        assert disk_overrun(layer, outside, bound, entries=most) is None
    assert disk_overrun(layer, outside, bound, entries=most + 1) is not None


def test_a_layer_of_empty_directories_is_past_its_bound_and_says_so() -> None:
    """Tried: 300,000 empty directories (a SizeRw of 0) against a 1 GiB bound. Must hold: past
    it, and the detail says the files and directories are what counted."""
    detail = disk_overrun(0, {"/etc/hosts": 174}, 1 << 30, entries=300_000)
    assert detail == (
        "wrote 1228800174 bytes, more than its disk bound of 1073741824 (300000 files and "
        "directories in its layer, each of which takes an inode and a block of the member's disk, "
        "4096 bytes each against the bound, whatever its size)"
    )


def test_a_file_outside_the_layer_counts_alone_and_is_named() -> None:
    """Tried: an empty layer, 1.5 GB written to /etc/hosts, a 1 GiB bound. Must hold: past it,
    and the detail says where the bytes went."""
    detail = disk_overrun(0, {"/etc/hosts": 1_500_000_000, "/etc/hostname": 13}, 1 << 30)
    assert detail == (
        "wrote 1500000013 bytes, more than its disk bound of 1073741824 "
        "(1500000000 of them to /etc/hosts, which counts against the bound like any other file)"
    )


def test_the_engines_own_few_bytes_are_not_named() -> None:
    assert disk_overrun(2 << 20, {"/etc/hosts": 174, "/etc/resolv.conf": 40}, 1 << 20) == (
        "wrote 2097366 bytes, more than its disk bound of 1048576"
    )


def test_without_a_quota_the_layer_is_always_measured() -> None:
    assert needs_layer_measured(engine_quota=False, outside={})
    assert needs_layer_measured(engine_quota=False, outside={"/etc/hosts": 174})


def test_with_a_quota_the_layer_is_measured_only_once_the_files_outside_it_hold_more_than_the_slack() -> None:
    """The quota bounds the layer alone; the two together can pass the bound only once the
    files outside it hold more than the engine writes."""
    assert not needs_layer_measured(engine_quota=True, outside={"/etc/hosts": 174, "/etc/hostname": 13})
    assert not needs_layer_measured(engine_quota=True, outside={"/etc/hosts": OUTSIDE_LAYER_SLACK})
    assert needs_layer_measured(
        engine_quota=True, outside={"/etc/hosts": OUTSIDE_LAYER_SLACK, "/etc/hostname": 1}
    )


@given(used=sizes, rate=rates, bound=sizes, regular_s=intervals)
def test_a_container_is_measured_again_within_the_regular_interval_and_never_sooner_than_the_soonest(
    used: int, rate: float, bound: int, regular_s: float
) -> None:
    delay = next_measure_in(used=used, rate=rate, bound=bound, regular_s=regular_s)
    assert min(SOONEST_MEASURE_S, regular_s) <= delay <= regular_s


@given(used=sizes, rate=rates, bound=sizes, regular_s=intervals)
def test_a_steady_writer_is_measured_before_it_reaches_its_bound_or_at_the_soonest(
    used: int, rate: float, bound: int, regular_s: float
) -> None:
    """At the rate it wrote since its last measure, a container does not pass its bound before
    the next measure unless that measure is already as soon as the guard goes: the overrun is
    at most SOONEST_MEASURE_S of its writing, not a whole interval's. (One already past its
    bound is stopped, not measured again.)"""
    assume(used <= bound)
    delay = next_measure_in(used=used, rate=rate, bound=bound, regular_s=regular_s)
    assert used + max(rate, 0) * delay <= bound or delay == min(SOONEST_MEASURE_S, regular_s)


def test_a_container_that_writes_nothing_waits_the_regular_interval() -> None:
    assert next_measure_in(used=5 << 30, rate=0.0, bound=10 << 30, regular_s=10) == 10
    assert next_measure_in(used=5 << 30, rate=-4096.0, bound=10 << 30, regular_s=10) == 10


def test_a_container_writing_toward_its_bound_is_measured_at_half_the_time_it_would_take() -> None:
    """Tried: 900 MiB of a 1 GiB bound written, 30 MiB/s since the last measure (about 4 s to
    go). Must hold: measured again in about 2 s, not 10."""
    delay = next_measure_in(used=900 << 20, rate=30 * (1 << 20), bound=1 << 30, regular_s=10)
    assert 2.0 < delay < 2.1


def test_an_overrun_says_what_of_the_disk_its_log_keeps() -> None:
    """Must hold: past a bound that is the disk less its log's part, the detail names both, so
    a user who asked for 64 MiB is not left wondering about a smaller number; within, None."""
    bound, log_part = 60 * 1024 * 1024, 4 * 1024 * 1024
    assert disk_overrun(bound, {}, bound, log_part=log_part) is None
    said = disk_overrun(bound + 1, {}, bound, log_part=log_part)
    assert said is not None
    disk = bound + log_part
    assert f"more than its disk bound of {disk} less the {log_part} its output log may take" in said


@given(used=sizes, written_since=sizes, bound=sizes)
def test_a_container_is_measured_at_once_when_what_it_wrote_since_is_half_its_room(
    used: int, written_since: int, bound: int
) -> None:
    """What is tried: any bytes at the last measure, written since and bound. What must hold:
    measured at once exactly when it wrote something since its last measure and that is at
    least half the room it had left (the half-way point next_measure_in goes by); so, between
    two reads of its writes, it can pass its bound only by writing more than half its room
    in that time."""
    assume(used <= bound)
    now = measure_now(used=used, written_since=written_since, bound=bound)
    assert now == (written_since > 0 and written_since >= (bound - used) / 2)


def test_a_burst_after_an_idle_spell_is_measured_before_its_bound_and_a_trickle_is_not() -> None:
    """What is tried: 100 MiB of a 1 GiB bound at the last measure (a rate of 0 since). What
    must hold: 600
    MiB written since has it measured now, 4 MiB does not, and nothing written never does,
    even with no room left."""
    assert measure_now(used=100 << 20, written_since=600 << 20, bound=1 << 30)
    assert not measure_now(used=100 << 20, written_since=4 << 20, bound=1 << 30)
    assert not measure_now(used=1 << 30, written_since=0, bound=1 << 30)
    assert measure_now(used=1 << 30, written_since=1, bound=1 << 30)
