"""The registry's metrics: hosts by status, heartbeats missed per registered host."""

import math

from potluck.kernel.metrics import PoolMetrics, Sample
from potluck.registry.service import RegistryService

__all__ = ["watch_registry"]


def watch_registry(metrics: PoolMetrics, service: RegistryService) -> None:
    def sample() -> Sample:
        out: Sample = []
        statuses: dict[str, int] = {}
        interval = service.policy.heartbeat_interval_s
        for host in list(service.view.hosts.values()):
            statuses[host.status] = statuses.get(host.status, 0) + 1
            if host.registered:
                missed = math.floor(service.last_seen.silent_for(host.host_id) / interval)
                out.append(("potluck.host.heartbeats_missed", missed, {"host_id": host.host_id}))
        out.extend(("potluck.hosts", n, {"status": s}) for s, n in sorted(statuses.items()))
        return out

    metrics.add_source(sample)
