"""How fast one host may ask the registry: a token bucket per host, so a host in a loop is refused
while the others are served as before.

Every request (register, control, status) and every heartbeat of a host takes
a token from that host's bucket of its kind; a bucket refills at a steady rate
up to its burst. A host with an empty bucket is refused without the registry
reading or writing anything: a request is answered RATE_LIMITED, a heartbeat
is ignored. The first refusal of a streak is logged (then one log line per
`log_every` refusals, so a loop cannot flood the log either), and every one is
counted per host.

The buckets are potluck.kernel.key_rates' (pure: the clock is a parameter).
`log_refusal` is the one place the refusal's log line is written.
"""

import structlog

from potluck.kernel.key_rates import KeyRates, Verdict

__all__ = ["log_refusal"]

log = structlog.get_logger(__name__)


def log_refusal(rates: KeyRates, verdict: Verdict, host_id: str, subject: str) -> None:
    """Log a refusal when `verdict` says this one is logged (the first of a streak, then sparsely)."""
    if verdict.log:
        log.warning(
            "registry.host_rate_exceeded",
            host_id=host_id,
            subject=subject,
            refused_in_a_row=verdict.streak,
            refused=rates.refused[host_id],
            per_s=rates.policy.per_s,
            burst=rates.policy.burst,
        )
