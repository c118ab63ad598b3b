"""The machine's temperature: the hottest sysfs thermal zone (or a directory laid out alike).

Each `thermal_zone*/temp` holds millidegrees Celsius. A machine without zones has no
sensor: None, and heat never acts.
"""

from pathlib import Path


def parse_millidegrees(text: str) -> float:
    return int(text.strip()) / 1000.0


def hottest(readings: list[float]) -> float | None:
    return max(readings) if readings else None


def read_temperature(root: Path) -> float | None:
    readings: list[float] = []
    try:
        zones = sorted(root.glob("thermal_zone*/temp"))
    except OSError:
        return None
    for path in zones:
        try:
            readings.append(parse_millidegrees(path.read_text()))
        except (OSError, ValueError):
            continue
    return hottest(readings)
