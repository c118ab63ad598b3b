"""Putting one report into JetStream: retried while the bus is away or full, dropped if it never fits.

A report JetStream refuses for what it is (larger than the reports stream
takes) can never be stored: retrying it would block every later report behind
it, so it is logged and dropped. A refusal for the stream's state (full, the
server busy) or a bus that is away passes, so those are retried with backoff.
Either way hostd keeps running.
"""

import asyncio
from collections.abc import Mapping

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from potluck.events.bus import TRANSIENT_BUS_ERRORS

log = structlog.get_logger(__name__)

_NEVER_FITS: tuple[type[BaseException], ...] = (nats.js.errors.BadRequestError, nats.errors.MaxPayloadError)
# No responders: JetStream is not (yet) up on the server hostd reached.
_PASSES: tuple[type[BaseException], ...] = (
    *TRANSIENT_BUS_ERRORS,
    nats.errors.NoRespondersError,
    nats.js.errors.APIError,
)
MAX_BACKOFF_S = 5.0


async def publish_until_stored(
    js: JetStreamContext, subject: str, data: bytes, headers: Mapping[str, str], *, kind: str
) -> bool:
    """True once JetStream has the report; False when it refused it for good (logged)."""
    backoff = 0.2
    while True:
        try:
            await js.publish(subject, data, headers=dict(headers), timeout=5)
            return True
        except _NEVER_FITS as exc:
            log.error(
                "hostd.report_refused",
                kind=kind,
                size=len(data),
                error=str(exc),
                hint="the pool's reports stream will never take this report; it is dropped",
            )
            return False
        except _PASSES as exc:
            log.warning("hostd.report_retry", kind=kind, error=repr(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
