"""`ops/bench NAME --quick` runs end to end and prints every metric as one JSON line.

For each benchmark, the metrics its module docstring and bench/README.md
document, each with its unit and whether it is measured against a baseline
(the same quantity without Potluck, in the same run): then the record carries
`baseline` and `ratio` = value / baseline. No timing thresholds here: the
figures belong in bench/README.md.
"""

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: metric -> (unit, measured against a baseline)
Documented = dict[str, tuple[str, bool]]

REQUIRED = {
    "append_batched": "events/s",
    "replay": "events/s",
    "relay_publish": "events/s",
    "append_to_consumer_p50": "ms",
    "append_to_consumer_p99": "ms",
}

GATEWAY: Documented = {
    "throughput": ("MB/s", True),
    "throughput_up": ("MB/s", True),
    "rtt_p50": ("ms", True),
    "rtt_p99": ("ms", True),
    "rtt_p50_under_load": ("ms", True),
    "rtt_p99_under_load": ("ms", True),
}
PLACEMENT: Documented = {
    "placement_in_process": ("decisions/s", False),
    "placement_in_process_spread": ("decisions/s", False),
    "placement_through_log": ("decisions/s", False),
    "placement_through_log_one_at_a_time": ("decisions/s", False),
    "placement_through_log_batched": ("decisions/s", False),
}
ALLOCATION: Documented = {
    "post_to_running_p50": ("ms", True),
    "post_to_running_p99": ("ms", True),
    "post_to_running_warm_p50": ("ms", True),
    "post_to_running_warm_p99": ("ms", True),
    "post_to_running_interactive_warm_p50": ("ms", True),
    "post_to_running_interactive_warm_p99": ("ms", True),
    "post_to_running_cold_p50": ("ms", True),
    "post_to_running_cold_p99": ("ms", True),
    "engine_create": ("ms", False),
    "engine_start": ("ms", False),
    "engine_ahead": ("ms", False),
    "engine_take": ("ms", False),
    "engine_attach": ("ms", False),
    "engine_readback": ("ms", False),
    "engine_unfreeze": ("ms", False),
}
IMAGES: Documented = {
    "cold_start": ("ms", True),
    "warm_start": ("ms", True),
}
TRANSFER: Documented = {
    "scp_up": ("MB/s", True),
    "scp_down": ("MB/s", True),
    "rsync_up": ("MB/s", True),
    "cp_up": ("MB/s", True),
    "cp_down": ("MB/s", True),
}
JOBS: Documented = {
    "tasks_per_s": ("tasks/s", True),
    "overhead_p50": ("ms", True),
}
MEMBER: Documented = {
    "owner_slowdown": ("x", True),
    "react_p50": ("ms", False),
    "react_p99": ("ms", False),
    "resume_s": ("s", False),
    "flaps": ("transitions", False),
}


def run_quick(bench: str, timeout: float = 150) -> list[dict[str, Any]]:
    """`ops/bench BENCH --quick`: its exit status checked, its stdout as JSON records."""
    result = subprocess.run(
        [str(ROOT / "ops" / "bench"), bench, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # stdout holds only JSON
    assert records, result.stderr[-4000:]
    for record in records:
        assert {"bench", "metric", "value", "unit"} <= record.keys(), record
        assert record["bench"] == bench, record
    return records


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_documented(records: list[dict[str, Any]], documented: Documented) -> None:
    printed = [r["metric"] for r in records]
    assert sorted(printed) == sorted(documented), "every documented metric, once, and no other"
    for record in records:
        unit, with_baseline = documented[record["metric"]]
        assert record["unit"] == unit, record
        assert is_number(record["value"]), record
        assert record["value"] > 0, record
        if with_baseline:
            assert is_number(record["baseline"]), record
            assert record["baseline"] > 0, record
            assert is_number(record["ratio"]), record
            # value and baseline are printed rounded (about 5 significant digits), ratio to 3 places.
            assert record["ratio"] == pytest.approx(record["value"] / record["baseline"], rel=1e-3, abs=1e-3)
        else:
            assert "baseline" not in record, record
            assert "ratio" not in record, record


def test_quick_event_bench_prints_every_metric_once() -> None:
    records = run_quick("events")
    for metric, unit in REQUIRED.items():
        found = [r for r in records if r["metric"] == metric]
        assert len(found) == 1, (metric, records)
        assert found[0]["unit"] == unit, found[0]
        value = found[0]["value"]
        assert isinstance(value, int | float), found[0]
        assert value > 0, found[0]


def test_quick_gateway_bench_prints_every_metric_once_against_docker_exec() -> None:
    records = run_quick("gateway")
    check_documented(records, GATEWAY)
    for record in records:
        assert record["priority"] is False, record
        if record["metric"].startswith("rtt_"):
            # The documented "added" round trip: the gateway's figure minus docker exec's
            # (both printed to about 5 significant digits).
            slack = 1e-4 * (record["value"] + record["baseline"]) + 1e-3
            assert record["added_ms"] == pytest.approx(record["value"] - record["baseline"], abs=slack)


def test_quick_placement_bench_prints_every_metric_once() -> None:
    records = run_quick("placement")
    check_documented(records, PLACEMENT)
    by_metric = {r["metric"]: r for r in records}
    assert by_metric["placement_in_process"]["strategy"] == "best_fit"
    assert by_metric["placement_in_process_spread"]["strategy"] == "spread"
    assert by_metric["placement_through_log"]["decisions_per_append"] == 1
    assert by_metric["placement_through_log"]["in_flight"] > 1
    assert by_metric["placement_through_log_one_at_a_time"]["in_flight"] == 1
    assert by_metric["placement_through_log_batched"]["decisions_per_append"] > 1
    assert is_number(by_metric["placement_through_log"]["store_append_per_s"])
    for record in records:
        # Every decision is counted as placed, waited or impossible.
        assert record["placed"] + record["waited"] + record["impossible"] == record["decisions"], record
        assert record["placed"] > 0, record


def test_quick_allocation_bench_prints_every_metric_once_against_docker_run() -> None:
    records = run_quick("allocation")
    check_documented(records, ALLOCATION)
    for record in records:
        assert record["rounds"] >= 1, record


def test_quick_images_bench_prints_every_metric_once_against_docker_pull_and_run() -> None:
    records = run_quick("images")
    check_documented(records, IMAGES)
    for record in records:
        assert record["rounds"] >= 1, record


def test_quick_transfer_bench_prints_every_metric_once_against_docker_cp() -> None:
    """`ops/bench transfer --quick` (32 MiB, one run; the default image from the cache): each
    of scp, rsync and potluck cp through the gateway, against docker cp on the same container."""
    records = run_quick("transfer", timeout=170)
    check_documented(records, TRANSFER)
    for record in records:
        assert record["runs"] == 1, record
        assert record["size_mb"] == 32, record


@pytest.mark.solo  # the owner's load it measures is every process outside the pool's containers
def test_quick_member_bench_prints_every_metric_once_against_a_plain_docker_run() -> None:
    """The owner policy measured end to end: the owner's slowdown against a plain `docker run
    --cpus` burner, how fast the pool's quota drops and comes back, and the flaps. How many
    flaps a two-second alternation gives depends on the machine's other load (it counts as
    the owner's), so only the count's shape is checked: whole, and its parts add up."""
    records = run_quick("member", timeout=240)
    flaps = next(r for r in records if r["metric"] == "flaps")
    assert flaps["value"] == flaps["throttles"] + flaps["resumes"], flaps
    others = [r for r in records if r["metric"] != "flaps"]
    check_documented(others, {k: v for k, v in MEMBER.items() if k != "flaps"})
    assert flaps["unit"] == "transitions"
    assert isinstance(flaps["value"], int), flaps
    assert flaps["value"] >= 0, flaps
    by_metric = {r["metric"]: r for r in records}
    assert by_metric["react_p50"]["value"] <= by_metric["react_p99"]["value"]
    assert by_metric["owner_slowdown"]["cores"] >= 1


def test_quick_jobs_bench_prints_every_metric_once_against_docker_run_rm() -> None:
    """`ops/bench jobs --quick`: a job of 10 `true` tasks on two private engines, against
    10 raw `docker run --rm` at the same concurrency; both metrics positive, with baselines."""
    records = run_quick("jobs", timeout=200)
    check_documented(records, JOBS)
    for record in records:
        assert record["tasks"] == 10, record
    overhead = next(r for r in records if r["metric"] == "overhead_p50")
    assert overhead["span"] == "placed_to_exited", overhead


def test_quick_web_bench_prints_the_pool_page_time() -> None:
    """`ops/bench web --quick`: 20 hosts and 200 allocations in the log, the pool page got 5 times."""
    records = run_quick("web")
    check_documented(records, {"pool_page_ms": ("ms", False), "pool_page_fold_ms": ("ms", False)})
    for record in records:
        assert (record["hosts"], record["allocations"]) == (20, 200), record


def test_quick_log_flood_bench_prints_every_case_once_against_the_containers_own_cpu() -> None:
    """`ops/bench log_flood --quick`: each workload with each log driver (3 s a case) on a
    private engine: the CPU spent outside the container, against the container's own."""
    records = run_quick("log_flood")
    check_documented(
        records,
        {
            f"{workload}_{driver}_outside_pct": ("% of a core", True)
            for workload in ("short", "long", "nonl")
            for driver in ("json-file", "local", "none")
        },
    )
    for record in records:
        assert record["seconds"] == 3.0, record
        assert 0 <= record["paused_pct"] <= 100, record
