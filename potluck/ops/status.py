"""`potluck ops status`: the pool on one screen, and the tables `replay --until` shares.

Everything comes from the log (the truth): hosts with their state and
capacity, allocations by state, and the relay's lag behind the log (head
position minus the relay's checkpoint: events not yet on the bus).
"""

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from potluck.events import EventStore
from potluck.events.relay import relay_lag
from potluck.projections import ReadModels, count_by, totals
from potluck.readmodels.allocations import TERMINAL

__all__ = ["gather_status", "pool_view", "render_pool", "render_status"]


def pool_view(models: ReadModels) -> dict[str, Any]:
    """The pool as `models` have it: hosts with capacity, allocations with state (canonical rows)."""
    state = models.to_dict()
    capacity = state["capacity"]
    active: dict[str, int] = {}
    for alloc in state["allocations"].values():
        if alloc["status"] not in TERMINAL and alloc["host_id"]:
            active[alloc["host_id"]] = active.get(alloc["host_id"], 0) + 1
    hosts = []
    for host_id, host in state["hosts"].items():
        row = capacity.get(host_id, {})
        hosts.append(
            {
                "host_id": host_id,
                "name": host["name"],
                "status": host["status"],
                "admin": host["admin"],
                "liveness": host["liveness"],
                "labels": host["labels"],
                "donated": row.get("donated"),
                "reserved": row.get("reserved"),
                "free": row.get("free"),
                "active_allocations": active.get(host_id, 0),
                "changed_at": host["changed_at"],
            }
        )
    live_capacity = {
        h: row
        for h, row in capacity.items()
        if state["hosts"].get(h, {}).get("status") not in (None, "deregistered", "enrolled")
    }
    return {
        "position": models.position,
        "recorded_at": models.recorded_at.isoformat() if models.recorded_at else None,
        "events": models.folded,
        "hosts": hosts,
        "capacity": totals(live_capacity),
        "allocations_by_state": count_by(state["allocations"], "status"),
        "allocations": list(state["allocations"].values()),
        "users": len(state["users"]),
        "sessions": {
            "open": sum(1 for s in state["sessions"].values() if s["state"] == "open"),
            "total": len(state["sessions"]),
        },
    }


async def gather_status(store: EventStore, relay: str = "main") -> dict[str, Any]:
    lag = await relay_lag(store, relay)
    models = await ReadModels.rebuild(store, until_position=lag.head)
    view = pool_view(models)
    view["relay"] = lag.as_dict()
    view["now"] = datetime.now(UTC).isoformat()
    return view


# --- tables -----------------------------------------------------------------------------------


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.4g}{unit}"
    return f"{n}B"


def cpus(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _triple(row: dict[str, Any], key: str, fmt: Any) -> str:
    parts = [row.get(part) for part in ("free", "reserved", "donated")]
    if parts[2] is None:
        return "-"
    return " / ".join(fmt(p[key]) if p else "-" for p in parts)


def _when(iso: str | None) -> str:
    return iso.replace("+00:00", "Z") if iso else "-"


def render_pool(console: Console, view: dict[str, Any], *, title: str) -> None:
    console.print(title, style="bold")
    hosts = Table(title="Hosts", title_justify="left", show_lines=False)
    for column in ("host", "name", "status", "cpus free/res/don", "memory free/res/don", "disk free/res/don"):
        hosts.add_column(column)
    hosts.add_column("allocs", justify="right")
    for h in view["hosts"]:
        hosts.add_row(
            h["host_id"],
            h["name"],
            h["status"],
            _triple(h, "cpus", cpus),
            _triple(h, "memory_bytes", size),
            _triple(h, "disk_bytes", size),
            str(h["active_allocations"]),
        )
    console.print(hosts)
    total = view["capacity"]
    console.print(
        "Capacity (registered hosts): "
        f"cpus {cpus(total['free']['cpus'])} free of {cpus(total['donated']['cpus'])}, "
        f"memory {size(total['free']['memory_bytes'])} free of {size(total['donated']['memory_bytes'])}, "
        f"disk {size(total['free']['disk_bytes'])} free of {size(total['donated']['disk_bytes'])}"
    )
    by_state = view["allocations_by_state"]
    console.print(
        "Allocations by state: "
        + (", ".join(f"{state} {n}" for state, n in by_state.items()) if by_state else "none")
    )
    active = [a for a in view["allocations"] if a["status"] not in TERMINAL]
    if active:
        table = Table(title="Allocations not ended", title_justify="left")
        for column in ("allocation", "user", "state", "host", "cpus", "memory", "disk", "image", "since"):
            table.add_column(column)
        for a in sorted(active, key=lambda a: (a["requested_at"] or "", a["alloc_id"])):
            r = a["resources"]
            table.add_row(
                a["alloc_id"],
                a["user"],
                a["status"],
                a["host_id"] or "-",
                cpus(r["cpus"]),
                size(r["memory_bytes"]),
                size(r["disk_bytes"]),
                a["image"],
                _when(a["changed_at"]),
            )
        console.print(table)


def render_status(console: Console, view: dict[str, Any]) -> None:
    render_pool(
        console,
        view,
        title=f"Pool at log position {view['position']} (last event {_when(view['recorded_at'])})",
    )
    relay = view["relay"]
    if relay["checkpoint"] is None:
        console.print(f"Relay {relay['name']!r}: has never run; {relay['head']} events not published")
    else:
        console.print(
            f"Relay {relay['name']!r}: {relay['lag']} events behind the log "
            f"(published through {relay['checkpoint']} of {relay['head']}, "
            f"checkpoint moved {_when(relay['checkpoint_updated_at'])})"
        )
    sessions = view["sessions"]
    console.print(
        f"Users: {view['users']}; SSH sessions: {sessions['open']} open, {sessions['total']} recorded"
    )
