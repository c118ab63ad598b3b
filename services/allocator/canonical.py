"""The allocator's read models as plain data: the one form live answers and replays share.

Sorted keys, ISO times, no token hashes, environment values redacted. The
allocator answers `ALLOCATOR_STATE` in this form (live_state.py), and
`potluck ops replay --check` compares it with the same models rebuilt from the
log alone, so any drift between a running allocator and the log shows.
"""

from datetime import datetime
from typing import Any

from potluck.allocator.capacity import CapacityLedger
from potluck.allocator.conditions import condition_of
from potluck.allocator.users import UsersView
from potluck.contracts.capacity import Capacity
from potluck.readmodels.allocations import AllocationState, AllocationsView
from potluck.readmodels.hosts import HostState, HostsView, host_as_dict
from potluck.readmodels.jobs import JobState, JobsView

__all__ = ["allocation_as_dict", "canonical", "capacity_as_dict", "iso", "job_as_dict"]


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _figures(c: Capacity) -> dict[str, Any]:
    return {"cpus": round(c.cpus, 6), "memory_bytes": c.memory_bytes, "disk_bytes": c.disk_bytes}


def capacity_as_dict(hosts: HostsView, ledger: CapacityLedger) -> dict[str, dict[str, Any]]:
    """Per host with a donation or a capacity stream: donated, reserved, free, and who holds what."""
    rows: dict[str, dict[str, Any]] = {}
    for host_id in sorted(set(hosts.hosts) | set(ledger.host_ids())):
        host = hosts.hosts.get(host_id)
        donated = host.donated if host is not None and host.donated is not None else None
        if donated is None and not ledger.version(host_id):
            continue
        reserved = ledger.reserved(host_id)
        rows[host_id] = {
            "version": ledger.version(host_id),
            "donated": _figures(donated) if donated is not None else None,
            "reserved": _figures(reserved),
            "free": _figures(donated - reserved) if donated is not None else None,
            "holdings": {a: _figures(c) for a, c in sorted(ledger.holdings(host_id).items())},
        }
    return rows


def allocation_as_dict(state: AllocationState, host: HostState | None = None) -> dict[str, Any]:
    """`host`, its host's state, gives the condition its user is told (conditions.py)."""
    spec = state.spec
    condition = condition_of(state, host)
    mark = state.frozen_too_long
    return {
        "alloc_id": state.alloc_id,
        "user": state.user,
        "status": state.status,
        "host_id": state.host_id,
        "container_id": state.container_id,
        "resources": _figures(spec.resources),
        "image": spec.image,
        "command": list(spec.command) if spec.command is not None else None,
        # Values may be a user's secrets: the canonical form keeps only the names.
        "env": sorted(spec.env),
        "ssh_keys": len(spec.ssh_keys),
        "network": spec.network,
        "pids_limit": spec.pids_limit,
        "lifetime_s": state.lifetime_s,
        "constraints": dict(sorted(state.constraints.items())),
        "expires_at": iso(state.expires_at),
        "exit_code": state.exit_code,
        "oom_killed": state.oom_killed,
        "reason": state.reason,
        "on_preempt": spec.on_preempt,
        "condition": None
        if condition is None
        else {
            "state": condition.state,
            "cause": condition.cause,
            "reason": condition.reason,
            "since": iso(condition.since),
            "share_cpus": condition.share_cpus,
            "until": iso(condition.until),
        },
        "frozen_too_long": None
        if mark is None
        else {
            "host_id": mark.host_id,
            "frozen_since": iso(mark.frozen_since),
            "frozen_s": mark.frozen_s,
            "max_frozen_s": mark.max_frozen_s,
            "marked_at": iso(mark.marked_at),
        },
        "keep_for_s": spec.keep_for_s,
        "kept_until": iso(state.kept_until),
        "job_id": state.job_id,
        "task_index": state.task_index,
        "attempt": state.attempt,
        "started_at": iso(state.started_at),
        "ended_at": iso(state.ended_at),
        "version": state.version,
        "requested_at": iso(state.requested_at),
        "changed_at": iso(state.changed_at),
    }


def job_as_dict(job: JobState) -> dict[str, Any]:
    spec = job.spec
    return {
        "job_id": job.job_id,
        "user": job.user,
        "status": job.status,
        "tasks": spec.tasks,
        "image": spec.task.image,
        "parallelism": spec.parallelism,
        "retries": spec.retries,
        "retry_on": list(spec.retry_on),
        "deadline": iso(job.deadline),
        "keep_for_s": spec.task.keep_for_s,
        "attempts": {str(i): list(job.attempts[i]) for i in sorted(job.attempts)},
        "succeeded": job.succeeded,
        "failed": job.failed,
        "cancelled_by": job.cancelled_by,
        "reason": job.reason,
        "submitted_at": iso(job.submitted_at),
        "ended_at": iso(job.ended_at),
        "version": job.version,
    }


def canonical(
    *,
    hosts: HostsView | None = None,
    ledger: CapacityLedger | None = None,
    allocations: AllocationsView | None = None,
    users: UsersView | None = None,
    jobs: JobsView | None = None,
) -> dict[str, Any]:
    """The models given, as plain data in the one form replay and live services share."""
    out: dict[str, Any] = {}
    if hosts is not None:
        out["hosts"] = {h: host_as_dict(hosts.hosts[h]) for h in sorted(hosts.hosts)}
    if ledger is not None:
        out["capacity"] = capacity_as_dict(hosts or HostsView(), ledger)
    if allocations is not None:
        known = hosts.hosts if hosts is not None else {}
        out["allocations"] = {}
        for alloc_id in sorted(allocations.allocations):
            state = allocations.allocations[alloc_id]
            host = known.get(state.host_id) if state.host_id else None
            out["allocations"][alloc_id] = allocation_as_dict(state, host)
    if users is not None:
        out["users"] = {
            name: {"user": name, "quota": users.users[name].quota.model_dump(mode="json")}
            for name in sorted(users.users)
        }
    if jobs is not None:
        out["jobs"] = {j: job_as_dict(jobs.jobs[j]) for j in sorted(jobs.jobs)}
    return out
