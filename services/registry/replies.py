"""Answers to NATS requests: a handler's result or refusal as one `Reply`, errors by stable code.

Like the allocator's error middleware for HTTP, one place maps what a handler
raises to what the requester reads: a request that does not validate is
BAD_REQUEST (naming the first bad field), a refusal of the aggregate keeps its
own code (NOT_ENROLLED, NOT_REGISTERED, BUSY, ...), the event log away (Postgres
stopped or restarting) is LOG_UNAVAILABLE, logged sparingly without a traceback
(every host asks again until it is back), and anything else is
INTERNAL, logged with its traceback under an incident id, and the registry goes on serving.
The requester reads only the code, what to do and that id (potluck.kernel.rejections'
`internal_error`): the exception's text (the database's address, SQL, paths) is the operator's.

Before any handler runs, a host's request is admitted: with a reply subject in
the host's own inbox (potluck.events' ReplyGuard; any other is refused, counted,
logged sparingly and never answered, and costs the host's rate nothing: it may
be JetStream's answer to another host, who named this subject as its reply),
then within the host's rate (host_rate.py; beyond it the answer is RATE_LIMITED
and nothing is read or written).
Then a host that left or was revoked is refused, whatever it asks (HOST_LEFT,
HOST_REVOKED, from the gate's `gone` check): no handler of a gone host's
request runs, so none can bring it back. Only its status is answered, so the
member can read that it left.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import host_of, inbox_prefix, join_inbox_prefix
from potluck.events import database_away
from potluck.events.bus import bus_away
from potluck.events.replies import REFUSAL_LOG_RATE, ReplyGuard
from potluck.kernel.key_rates import KeyRates
from potluck.kernel.rejections import Rejected, first_error, internal_error, new_incident
from potluck.registry.host_rate import log_refusal

__all__ = ["GoneCheck", "HostHandler", "HostRequestGate", "answer"]

log = structlog.get_logger(__name__)

#: A request about one host (its id is the subject's last token) and its payload, to the answer's data.
HostHandler = Callable[[str, bytes], Awaitable[dict[str, Any]]]
#: A subscription's callback.
Callback = Callable[[Msg], Awaitable[None]]
#: Why a host is refused whatever it asks (it left, it was revoked), or None.
GoneCheck = Callable[[str], Rejected | None]


def _never_gone(host_id: str) -> Rejected | None:
    return None


async def answer(msg: Msg, reply: Reply, guard: ReplyGuard, inbox: str, *, requester: str) -> None:
    await guard.respond(msg, reply.model_dump_json().encode(), inbox, requester=requester)


def log_or_bus_away(exc: BaseException) -> bool:
    """Whether a handler's `exc` means the event log's database or the bus is away for now (so
    LOG_UNAVAILABLE: ask again): asyncpg's or NATS's errors, or an OSError or a timeout raised
    through their calls. One out of the registry's own work (the users file not written: a full
    disk, a path that is a file) is a failure an operator must see, with its traceback."""
    return database_away(exc) or bus_away(exc)


class HostRequestGate:
    """Admits hosts' requests (rate, reply subject) and answers them with a handler's result."""

    def __init__(
        self,
        guard: ReplyGuard,
        rates: KeyRates,
        clock: Callable[[], float] = time.monotonic,
        *,
        gone: GoneCheck = _never_gone,
    ) -> None:
        self.guard = guard
        self.rates = rates
        self.clock = clock
        self.gone = gone
        #: Requests refused per host because it left or was revoked.
        self.refused_gone: dict[str, int] = {}
        #: Requests answered LOG_UNAVAILABLE since start; logged at most once a second after ten.
        self.log_away = 0
        self._log_away_logged = KeyRates(REFUSAL_LOG_RATE)

    async def admits(self, msg: Msg, *, joining: bool = False) -> bool:
        """Is `msg` the host's own request (a reply in its inbox, or the join token's if
        `joining`) within its rate? Past the rate it is answered RATE_LIMITED here."""
        host_id = host_of(msg.subject)
        inbox = join_inbox_prefix(host_id) if joining else inbox_prefix(host_id)
        # The reply subject first: what names no reply in the host's inbox is not the host's
        # request (JetStream's answers to another host land here too) and costs its rate nothing.
        if not self.guard.allows(msg, inbox, requester=host_id):
            return False
        verdict = self.rates.check(host_id, self.clock())
        if not verdict.allowed:
            log_refusal(self.rates, verdict, host_id, msg.subject)
            refusal = Rejected(
                "RATE_LIMITED",
                f"host {host_id} asks faster than {self.rates.policy.per_s:g} requests a second; slow down",
                status=429,
            )
            await answer(msg, Reply(ok=False, error=refusal.as_dict()), self.guard, inbox, requester=host_id)
            return False
        return True

    async def serve(self, msg: Msg, handler: HostHandler, *, gone_too: bool = False) -> None:
        """Answer an admitted request (`admits`) with `handler`'s data or its error."""
        host_id = host_of(msg.subject)
        gone = None if gone_too else self.gone(host_id)
        if gone is not None:
            self.refused_gone[host_id] = self.refused_gone.get(host_id, 0) + 1
            log.warning(
                "registry.gone_host_refused",
                host_id=host_id,
                subject=msg.subject,
                code=gone.code,
                hint="the host left or was revoked; it comes back only if an operator enrolls it again",
            )
            await msg.respond(Reply(ok=False, error=gone.as_dict()).model_dump_json().encode())
            return
        try:
            reply = Reply(ok=True, data=await handler(host_id, msg.data))
        except ValidationError as exc:
            reply = Reply(ok=False, error={"code": "BAD_REQUEST", "message": first_error(exc)})
        except Rejected as exc:
            reply = Reply(ok=False, error=exc.as_dict())
        except Exception as exc:
            if log_or_bus_away(exc):
                reply = Reply(ok=False, error=self._log_away(msg.subject, host_id, exc))
            else:
                incident = new_incident()
                log.exception(
                    "registry.request_failed", subject=msg.subject, host_id=host_id, incident=incident
                )
                reply = Reply(ok=False, error=internal_error("registry", incident))
        await msg.respond(reply.model_dump_json().encode())

    def _log_away(self, subject: str, host_id: str, exc: BaseException) -> dict[str, Any]:
        """LOG_UNAVAILABLE: the log (its database) or the bus is away for now. No bug: logged
        without a traceback and sparingly, since every host asks again until it is back."""
        self.log_away += 1
        if self._log_away_logged.check("log", self.clock()).allowed:
            log.warning(
                "registry.log_unavailable",
                subject=subject,
                host_id=host_id,
                error=repr(exc)[:200],
                refused=self.log_away,
                hint="the pool's Postgres is stopped, restarting or unreachable; hosts ask again",
            )
        return Rejected(
            "LOG_UNAVAILABLE",
            "the registry cannot reach the pool's event log, its database, just now, so this may not "
            "have been recorded: ask again in a few seconds; asking again is safe",
        ).as_dict()

    def on_request(
        self,
        handler: HostHandler,
        *,
        gone_too: bool = False,
        joining: bool = False,
        queue: Callable[[Callback], Callback] | None = None,
    ) -> Callback:
        """The NATS callback answering hosts' requests with `handler` (gone hosts too if
        `gone_too`; into the join token's inbox if `joining`).

        `queue` (an Admission's `admit`) runs the handler a few at a time; only what the gate
        admits is queued, as it arrives: a host in a loop is refused at the cost of the checks,
        and its requests never stand in line before other hosts' (before, 200,000 of one host's
        registrations queued unchecked, and every other host's waited past its sender's patience
        and was dropped)."""

        async def serve(msg: Msg) -> None:
            await self.serve(msg, handler, gone_too=gone_too)

        queued = serve if queue is None else queue(serve)

        async def callback(msg: Msg) -> None:
            if await self.admits(msg, joining=joining):
                await queued(msg)

        return callback
