"""`potluck ops status`: the pool on one screen, and the tables `replay --until` shares.

Everything comes from the log (the truth): hosts with their state and
capacity, allocations by state, and the relay's lag behind the log (head
position minus the relay's checkpoint: events not yet on the bus).

And the events this version cannot read: every reader skips an event it
cannot decode (a newer writer's type, data that no longer validates) and goes
on, so such an event changes nothing on screen unless it is shown. The
status's own rebuild counts them, with each one's position, stream and type;
with `--live`, the running registry and allocator say how many they skipped
(they may run another version than this command, so the figures may differ).
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from potluck.events import EventStore, SkippedEvents
from potluck.events.relay import relay_lag
from potluck.kernel.terminal_text import shown
from potluck.ops.live import LiveModel
from potluck.projections import ReadModels, count_by, totals
from potluck.readmodels.allocations import TERMINAL

__all__ = [
    "ServiceAnswer",
    "gather_status",
    "pool_view",
    "render_pool",
    "render_status",
    "render_unreadable",
    "skipped_entries",
    "unreadable_events",
]


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
        out = host["status"] in _OUT_OF_THE_POOL
        hosts.append(
            {
                "host_id": host_id,
                "name": host["name"],
                "status": host["status"],
                "admin": host["admin"],
                "liveness": host["liveness"],
                # Its hostd runs but its Docker engine does not answer: nothing is placed there.
                "engine_away": host["engine_away"],
                "labels": host["labels"],
                "donated": row.get("donated"),
                "reserved": row.get("reserved"),
                # Nothing of an out host's donation is the pool's to place (it read as all free).
                "free": None if out else row.get("free"),
                "active_allocations": active.get(host_id, 0),
                "changed_at": host["changed_at"],
            }
        )
    # A host that left or was revoked is out for good, as a deregistered one is out until it
    # registers again: its donation is no capacity of the pool's.
    live_capacity = {
        h: row
        for h, row in capacity.items()
        if state["hosts"].get(h, {}).get("status") not in (None, *_OUT_OF_THE_POOL)
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


def skipped_entries(skipped: Any) -> tuple[int, list[Any]]:
    """How many events a rebuild skipped, and those it remembers in log order (each with position,
    stream, type and error), from `ReadModels.skipped`: a SkippedEvents counter or a list."""
    if isinstance(skipped, SkippedEvents):
        count, entries = skipped.count, list(skipped.recent)
    else:
        entries = list(skipped)
        count = len(entries)
    return count, sorted(entries, key=lambda e: int(e.position))


#: What a running service answered when asked (its LiveModel), or why it did not (one line).
ServiceAnswer = LiveModel | str


def unreadable_events(skipped: Any, services: Mapping[str, ServiceAnswer] | None = None) -> dict[str, Any]:
    """The events a rebuild skipped (`ReadModels.skipped`: SkippedEvents, or a list of entries with
    position, stream, type and error), and what each service asked said it skipped (None: not asked)."""
    count, entries = skipped_entries(skipped)
    events = [{"position": e.position, "stream": e.stream, "type": e.type, "error": e.error} for e in entries]
    asked: dict[str, Any] | None = None
    if services is not None:
        asked = {}
        for name, answer in services.items():
            if isinstance(answer, LiveModel):
                asked[name] = {
                    "position": answer.position,
                    "skipped": answer.skipped,
                    "recent": answer.skipped_recent,
                }
            else:
                asked[name] = {"error": answer}
    return {"count": count, "events": events, "services": asked}


async def gather_status(
    store: EventStore, relay: str = "main", *, services: Mapping[str, ServiceAnswer] | None = None
) -> dict[str, Any]:
    """The pool from the log; `services`: the running services' answers, when they were asked."""
    lag = await relay_lag(store, relay)
    models = await ReadModels.rebuild(store, until_position=lag.head)
    view = pool_view(models)
    view["relay"] = lag.as_dict()
    view["unreadable"] = unreadable_events(models.skipped, services)
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


#: Statuses of hosts whose donation is none of the pool's capacity now.
_OUT_OF_THE_POOL = ("deregistered", "enrolled", "left", "revoked")


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
            shown(h["host_id"]),
            shown(h["name"]),
            shown(h["status"] + (", engine away" if h.get("engine_away") else "")),
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
                shown(a["alloc_id"]),
                shown(a["user"]),
                shown(a["status"]),
                shown(a["host_id"] or "-"),
                cpus(r["cpus"]),
                size(r["memory_bytes"]),
                size(r["disk_bytes"]),
                shown(a["image"]),
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
    render_unreadable(console, view["unreadable"])


def render_unreadable(console: Console, unreadable: dict[str, Any]) -> None:
    count = unreadable["count"]
    if count == 0:
        console.print("Unreadable events: none in the log")
    else:
        console.print(
            f"Unreadable events: {count} in the log that this version cannot decode; "
            "every reader skips them (upgrade the readers to fold them)",
            style="bold",
        )
        table = Table(title_justify="left")
        for column in ("position", "stream", "type", "why"):
            table.add_column(column, overflow="fold")
        for e in unreadable["events"]:
            table.add_row(str(e["position"]), shown(e["stream"]), shown(e["type"]), shown(e["error"]))
        if len(unreadable["events"]) < count:
            table.caption = f"the last {len(unreadable['events'])} of {count}"
        console.print(table)
    services = unreadable["services"]
    if services is None:
        return
    parts = []
    for name, answer in services.items():
        if "error" in answer:
            parts.append(f"{name} not asked: {answer['error']}")
        elif answer["skipped"] is None:
            parts.append(f"{name} (at position {answer['position']}) does not say")
        else:
            positions = ", ".join(str(e["position"]) for e in answer["recent"])
            at = f" (at {positions})" if positions else ""
            parts.append(f"{name} {answer['skipped']}{at}, folded to position {answer['position']}")
    console.print("Skipped by the running services: " + shown("; ".join(parts)))
