"""What a hostile member can do with their own credentials, speaking NATS directly: every
message their host may publish is refused with a logged reason when it is bad, nothing of
anyone else's is lost, and the services keep serving (the real pool: NATS with nkeys,
Postgres, registry, allocator)."""

import asyncio
import json
from typing import Any

import nats
import nats.errors
import nats.js.errors

from potluck.contracts.reports import EngineStatus
from potluck.events import DEAD_LETTER_STREAM, REPORTS_STREAM
from potluck.events.bus import H_DLQ_REASON, H_DLQ_SUBJECT, dead_letter_subject
from tests.fixtures.pool import Pool


def _allocator_log(pool: Pool) -> list[dict[str, Any]]:
    lines = (pool.workdir / "allocator.log").read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def _wait(predicate: Any, what: str, pool: Pool, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{pool.logs()}")
        await asyncio.sleep(0.1)


async def test_a_poison_report_carrying_jetstreams_own_headers_is_dead_lettered_and_the_next_served(
    pool: Pool,
) -> None:
    """Tried: host B publishes, on its own report subjects, messages that are no report and carry
    JetStream's publish expectations, chosen to hold in the reports stream and to fail in the
    dead-letter stream (`Nats-Expected-Stream` naming the reports stream;
    `Nats-Expected-Last-Subject-Sequence: 0` on a subject of its own that is still empty).
    Before: the allocator copied the headers onto the dead letter, JetStream refused that
    publish, and the error ended the allocator's report consumer, and the allocator with it
    (the message stayed unacknowledged, so a restarted allocator met it again). Must hold: each
    is kept as a dead letter with its reason and original subject, and host A's report sent
    afterwards is read and logged by the same allocator process."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    services = await pool.client()
    js = services.jetstream()
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    dlq = dead_letter_subject("allocator-reports")
    allocator_pid = pool.processes["allocator"].pid
    poison = {
        f"potluck.report.{b.host_id}.usage": {"Nats-Expected-Stream": REPORTS_STREAM},
        f"potluck.report.{b.host_id}.failed": {"Nats-Expected-Last-Subject-Sequence": "0"},
    }
    for subject, headers in poison.items():
        ack = await as_b.jetstream().publish(subject, b"not a report", headers=headers)
        assert ack.stream == REPORTS_STREAM  # the report stream took it: the expectation held there

    async def dead_lettered() -> bool:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)
        return (info.state.subjects or {}).get(dlq, 0) >= len(poison)

    await _wait(dead_lettered, "B's two messages dead-lettered", pool)
    mark = EngineStatus(available=True, detail="engine of A after the poison").model_dump_json().encode()
    await as_a.jetstream().publish(f"potluck.report.{a.host_id}.engine", mark)

    async def a_logged() -> bool:
        return any(e.get("detail") == "engine of A after the poison" for e in _allocator_log(pool))

    await _wait(a_logged, "A's engine report in the allocator's log", pool)
    assert pool.processes["allocator"].pid == allocator_pid
    assert pool.processes["allocator"].running(), pool.logs()
    info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)
    letters = []
    for seq in range(1, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
        except nats.js.errors.NotFoundError:
            continue
        if msg.subject == dlq and msg.headers is not None:
            letters.append(msg.headers)
    kept = {h[H_DLQ_SUBJECT]: h for h in letters}
    assert set(poison) <= set(kept), kept
    for subject in poison:
        assert "cannot decode" in kept[subject][H_DLQ_REASON]
        # The dead letter says what the host asked of JetStream only as text, never as an order.
        assert not any(name.startswith("Nats-Expected") for name in kept[subject])
