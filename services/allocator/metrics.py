"""The allocator's metrics: capacity per host, allocations by state, placement latency."""

from potluck.allocator.canonical import capacity_as_dict
from potluck.allocator.engine import AllocatorEngine
from potluck.events import RecordedEvent
from potluck.kernel.metrics import PoolMetrics, Sample

__all__ = ["watch_allocator"]


def watch_allocator(metrics: PoolMetrics, engine: AllocatorEngine) -> None:
    """Sample `engine`'s models into the capacity and allocation gauges, and time each placement."""

    def sample() -> Sample:
        out: Sample = []
        for host_id, row in capacity_as_dict(engine.hosts, engine.ledger).items():
            host = engine.hosts.hosts.get(host_id)
            if host is None or host.admin == "deregistered":
                continue
            for kind in ("donated", "reserved", "free"):
                figures = row.get(kind)
                if not figures:
                    continue
                attrs = {"host_id": host_id, "kind": kind}
                out.append(("potluck.capacity.cpus", figures["cpus"], attrs))
                out.append(("potluck.capacity.memory", figures["memory_bytes"], attrs))
                out.append(("potluck.capacity.disk", figures["disk_bytes"], attrs))
        states = engine.allocations.by_status
        out.extend(("potluck.allocations", n, {"state": s}) for s, n in sorted(states.items()))
        return out

    def placed(record: RecordedEvent) -> None:
        # Called for records folded while following the log, not while catching up.
        if record.type != "AllocationPlaced":
            return
        state = engine.allocations.allocations.get(str(record.data.get("alloc_id")))
        if state is None or state.requested_at is None:
            return
        metrics.record_placement(state.requested_at, record.recorded_at)

    metrics.add_source(sample)
    engine.on_applied.append(placed)
