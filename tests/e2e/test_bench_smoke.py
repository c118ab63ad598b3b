"""`ops/bench events --quick` runs end to end and prints every metric as one JSON line.

No timing thresholds here: the figures belong in bench/README.md.
"""

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = {
    "append_batched": "events/s",
    "replay": "events/s",
    "relay_publish": "events/s",
    "append_to_consumer_p50": "ms",
    "append_to_consumer_p99": "ms",
}


def test_quick_event_bench_prints_every_metric_once() -> None:
    result = subprocess.run(
        [str(ROOT / "ops" / "bench"), "events", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # stdout holds only JSON
    for record in records:
        assert {"bench", "metric", "value", "unit"} <= record.keys(), record
        assert record["bench"] == "events"
    for metric, unit in REQUIRED.items():
        found = [r for r in records if r["metric"] == metric]
        assert len(found) == 1, (metric, lines)
        assert found[0]["unit"] == unit, found[0]
        value = found[0]["value"]
        assert isinstance(value, int | float), found[0]
        assert value > 0, found[0]
