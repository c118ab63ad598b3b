"""What counts against an allocation's disk bound (services/hostd/disk_bound.py), without an engine."""

from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.disk_bound import (
    OUTSIDE_LAYER_FILES,
    OUTSIDE_LAYER_SLACK,
    disk_overrun,
    needs_layer_measured,
)

sizes = st.integers(min_value=0, max_value=1 << 40)
outsides = st.dictionaries(st.sampled_from(OUTSIDE_LAYER_FILES), sizes)


@given(layer=sizes, outside=outsides, bound=sizes)
def test_past_the_bound_exactly_when_the_layer_and_the_files_outside_it_together_are(
    layer: int, outside: dict[str, int], bound: int
) -> None:
    assert (disk_overrun(layer, outside, bound) is not None) == (layer + sum(outside.values()) > bound)


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
