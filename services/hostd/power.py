"""Is the machine on battery? Read from the sysfs power_supply tree (or a directory laid out alike).

Each supply is a folder with a `type` file (Battery, Mains, USB, UPS, ...) and, for a battery,
`status` (Charging, Discharging, Full, ...), for a charger `online` (0 offline; 1 online, or 2
for a USB-C charger that negotiates its voltage). The machine runs on battery when it has a
battery and that battery says Discharging, or every one of its chargers (Mains, USB) says it is
offline. A charger whose `online` could not be read says nothing either way: read as unplugged,
one unreadable sample (or a supply folder seen half made) would freeze the pool's work on a
machine that is plugged in. A machine without a battery is never on battery.
"""

from dataclasses import dataclass
from pathlib import Path

_CHARGERS = ("Mains", "USB", "USB_C", "USB_PD", "USB_PD_DRP")


@dataclass(frozen=True)
class Supply:
    name: str
    type: str
    status: str = ""
    online: str = ""


@dataclass(frozen=True)
class PowerReading:
    has_battery: bool
    on_battery: bool
    detail: str


def judge(supplies: list[Supply]) -> PowerReading:
    batteries = [s for s in supplies if s.type == "Battery"]
    if not batteries:
        return PowerReading(False, False, "no battery")
    discharging = [s.name for s in batteries if s.status == "Discharging"]
    chargers = [s for s in supplies if s.type in _CHARGERS]
    unplugged = bool(chargers) and all(s.online == "0" for s in chargers)
    if discharging:
        return PowerReading(True, True, f"{', '.join(discharging)} discharging")
    if unplugged:
        return PowerReading(True, True, "no charger online")
    statuses = ", ".join(f"{s.name} {s.status or 'unknown'}" for s in batteries)
    return PowerReading(True, False, statuses)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def read_supplies(root: Path) -> list[Supply]:
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [
        Supply(name=e.name, type=_read(e / "type"), status=_read(e / "status"), online=_read(e / "online"))
        for e in entries
        if e.is_dir()
    ]


def read_power(root: Path) -> PowerReading:
    return judge(read_supplies(root))
