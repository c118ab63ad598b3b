"""While this machine's NATS key is shut out for holding too many connections (HostConnectionsCapped).

The registry takes the key out of the NATS users file for the cap's length, and nats-server
refuses it meanwhile exactly as it refuses a revoked key. hostd learns of the cap on its
consumer a moment before its connection is closed; it must not take the refusals until the cap
ends for a revocation, which stops the pool's containers here for good. The window is kept in
hostd's state directory too, so that a hostd restarted during the cap (its member, a crash, a
supervisor) knows of it as well. Times in the file are wall-clock (a restart loses the
monotonic clock); the window is counted on the monotonic clock once read.
"""

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SHUT_OUT_MARGIN_S", "ShutOut"]

#: How long past a cap's end a refused key is still not taken as revoked: the registry puts
#: the key back at the cap's end, and nats-server reloads.
SHUT_OUT_MARGIN_S = 30.0

FILE_NAME = "nats-shut-out.json"


@dataclass
class ShutOut:
    state_dir: Path
    #: Until when (time.monotonic) refusals are no revocation, and why.
    until: float = 0.0
    why: str = ""
    _file: Path = field(init=False)

    def __post_init__(self) -> None:
        self._file = self.state_dir / FILE_NAME

    def noticed(self, for_s: float, why: str) -> None:
        """The registry capped this key for `for_s` seconds from now: remember it, here and on disk."""
        self.until = time.monotonic() + for_s + SHUT_OUT_MARGIN_S
        self.why = why
        with contextlib.suppress(OSError):  # a full disk: this run still knows
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"until_unix": time.time() + for_s + SHUT_OUT_MARGIN_S, "why": why}))
            tmp.replace(self._file)

    def load(self) -> None:
        """A window a previous run noticed and that has not ended: this run keeps to it."""
        try:
            saved = json.loads(self._file.read_text())
            left = float(saved["until_unix"]) - time.time()
            why = str(saved["why"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if left > 0:
            self.until = time.monotonic() + left
            self.why = why

    def reason(self) -> str | None:
        """Why a refused key is no revocation now, or None once the window has passed."""
        return self.why if time.monotonic() < self.until else None
