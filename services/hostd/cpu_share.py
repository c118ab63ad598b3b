"""How a throttled pool's CPUs are spread over its containers: pure.

Each container keeps a part of the pool's share in proportion to the CPUs it asked for,
never more than it asked for, and never less than the engine's smallest quota (below
it Docker reads the quota back as no limit at all).
"""

import math

from potluck.contracts.capacity import MIN_CPUS


def spread(requested: dict[str, float], share_cpus: float | None) -> dict[str, float]:
    """CPUs for each container: its full request when `share_cpus` is None (not throttled)."""
    if share_cpus is None:
        return dict(requested)
    total = sum(requested.values())
    if total <= 0:
        return dict(requested)
    # Rounded down to a thousandth: the engine's quota is in microseconds per 100 ms period.
    return {
        key: max(MIN_CPUS, math.floor(min(cpus, share_cpus * cpus / total) * 1000) / 1000)
        for key, cpus in requested.items()
    }
