"""nats-py's client, made to read whatever bytes a sender puts on the wire without going deaf,
and to keep flush() a barrier.

nats-py's read loop decodes a message's reply subject, and the status line of its headers, as
UTF-8 outside any handler of its own: bytes that are not UTF-8 raise there, and the loop ends
with a logged error, neither closing nor reconnecting the connection. Nothing more is read on
it (no message, no answer, no PONG) until the pings notice, minutes later. nats-server passes
reply subjects and header bytes through as the publisher wrote them, and a host may publish
on its own subjects with any of them: one heartbeat with such a reply subject made the
registry deaf to every host's beats, and one report with such a header the allocator deaf to
every host's reports (the stream keeps the report, so it came back after each reconnect).

Here such a message is read all the same: an unreadable reply subject as none (nothing can
answer it, and the services' reply guards refuse a request without one), unreadable headers
as none; each is logged, sparingly.

flush() is meant to return once the server has everything written before it. nats-py (2.14 to
2.16 at least) queues SUB, UNSUB and PUB for its flusher task but writes the PING straight to
the socket, so the PING often overtakes what was queued just before it: the PONG came back
before a SUB was read, and a message another connection published "after" it was lost (37 of
200 rounds of subscribe, flush, publish elsewhere, on an idle loopback server). The registry
counts hosts' silence from its flush, and tests that watch for what must not arrive would
watch nothing. Here what is queued goes out before the PING.

A flush() given up before its PONG (its timeout, or the caller's: `asyncio.timeout` around
it, a task cancelled) leaves its cancelled future in line for that PONG, and nats-py's read
loop, setting a result on it when the PONG came, raised InvalidStateError and ended: the
connection stayed "connected" and read nothing more (no message, no answer) until the pings
gave it up as stale, minutes later. Here a PONG whose flush is gone is taken off the line and
nothing more.

While reconnecting, nats-py's flush() returned at once, with nothing sent (its read loop is
down, and it takes that for a client whose tasks died); and a flush waiting across a lost
connection had its PONG's place thrown away with the old connection, so it waited out its
whole timeout (10 s by default) and raised. Here a flush waits, within its timeout, for the
connection to come back (the subscriptions are replayed before it counts as connected), and
a PING lost with its connection is sent again on the next one.

nats-py closes the connection for good (CLOSED: no reconnect, no callback but a disconnect)
on any -ERR but a permissions violation or a stale connection, while nats-server sends some
-ERRs and keeps the connection: "maximum subscriptions exceeded" (our servers allow 1024 per
connection) refuses one SUB and nothing else. A service that met one went
deaf until restarted, and connect_bus's disconnect callback took the close for our own. Here an
-ERR is reported and the connection kept: when the server closes it after an -ERR, the end of
the stream reconnects as any lost server does (and a key refused on the way back is counted by
connect_bus), and a close nobody asked for (close_asked) is logged as an error by connect_bus.

request() files a future for its answer in the connection's response map before publishing,
and nats-py removes it only once it is done: when the publish raises (while reconnecting, once
the outbound buffer is full every request does: OutboundBufferLimitError), the future was never
done nor removed. 196 of 300 requests during one outage stayed for the life of the process,
and hostd and the allocator's log tail ask on every tick. Here a request whose publish fails
takes its future out again. (A timed-out or cancelled request, and an answer arriving after
it gave up, were already fine: the timeout cancels the future, and a late answer finds none.)

close() writes what is still queued to the connection's socket and waits for it to drain; while
reconnecting that socket is the lost one, the wait raised ConnectionResetError, and the rest of
close() (the subscriptions' tasks, the socket, the close callback) never ran: a service closing
during an outage (hostd stopping after its machine left) raised out of its stop path. Here what
is queued then is dropped, with a warning saying how much, since no server is there to take it.
"""

import asyncio
import time
from secrets import token_hex
from typing import Any

import structlog
from nats import errors
from nats.aio.client import DEFAULT_FLUSH_TIMEOUT, Client
from nats.protocol.parser import AUTHORIZATION_VIOLATION, STALE_CONNECTION

from potluck.kernel.key_rates import KeyRates, RatePolicy

__all__ = ["SturdyClient"]

#: How often a flush() made while reconnecting looks whether the connection is back.
RECONNECT_POLL_S = 0.05

log = structlog.get_logger(__name__)

#: Unreadable messages logged per subject.
UNREADABLE_LOG_RATE = RatePolicy(per_s=1.0, burst=10)


class _PingLost(Exception):
    """The connection a flush's PING went out on was lost before its PONG."""


class SturdyClient(Client):
    """A nats-py Client that reads a message it cannot decode rather than stop reading, and
    whose flush() follows everything queued before it."""

    def __init__(self) -> None:
        super().__init__()
        self._unreadable_logs = KeyRates(UNREADABLE_LOG_RATE)
        #: Messages read with their reply subject or headers left out, since this client was made.
        self.unreadable = 0
        #: close() or drain() was called: a close not asked for is news.
        self.close_asked = False
        #: The futures of flush() calls waiting for their PONG.
        self._flushes: set[asyncio.Future[bool]] = set()

    async def close(self) -> None:
        self.close_asked = True
        if not self.is_connected and not self.is_closed and self._pending_data_size > 0:
            # No server to take it (see the module's docstring): said, and let go.
            log.warning(
                "bus.closed_with_unsent",
                unsent_bytes=self._pending_data_size,
                hint="closed while the server was away: what was published since was never sent",
            )
            self._pending = []
            self._pending_data_size = 0
        await super().close()

    async def drain(self) -> None:
        # nats-py's drain() ends in its own _close(CLOSED), not in close(): unmarked, a client
        # that drains (as the services did at a stop, before bootstrap's _let_go flushed and
        # closed instead) was logged as bus.closed_for_good.
        if self.is_connected:  # else it raises, and the connection stays as it was
            self.close_asked = True
        await super().drain()

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        try:
            parsed: dict[str, str] | None = await super()._process_headers(headers)
        except UnicodeDecodeError as exc:
            self._unreadable("headers", bytes(headers[:64]), exc)
            return None
        return parsed

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> Any:
        try:
            return super()._build_message(sid, subject, reply, data, headers)
        except UnicodeDecodeError as exc:
            self._unreadable("subject", bytes(subject[:64]) + b" " + bytes(reply[:64]), exc)
            return super()._build_message(sid, subject.decode(errors="replace").encode(), b"", data, headers)

    async def _send_ping(self, future: Any = None) -> None:
        # While reconnecting, what is queued stays queued: nats-py replays it on the next
        # connection, and the PING it writes meanwhile has no server to answer it either way.
        if self.is_connected and self._pending_data_size > 0 and self._transport is not None:
            self._transport.writelines(self._pending[:])
            self._pending = []
            self._pending_data_size = 0
        await super()._send_ping(future)

    async def _process_err(self, err_msg: str) -> None:
        if STALE_CONNECTION in err_msg:
            await super()._process_err(err_msg)  # reconnects
            return
        err: errors.Error
        if AUTHORIZATION_VIOLATION in err_msg:
            err = errors.AuthorizationError()
        else:
            said = err_msg.strip("'")
            err = errors.Error(f"nats: {said}")
        self._err = err
        await self._error_cb(err)

    async def _request_new_style(
        self, subject: str, payload: bytes, timeout: float = 1, headers: dict[str, Any] | None = None
    ) -> Any:
        # nats-py's own, but for the publish that raises (see the module's docstring).
        if self.is_draining_pubs:
            raise errors.ConnectionDrainingError
        if not self._resp_sub_prefix:
            await self._init_request_sub()
        assert self._resp_sub_prefix is not None
        token = self._nuid.next()
        token.extend(token_hex(2).encode())
        inbox = self._resp_sub_prefix[:]
        inbox.extend(token)
        key = token.decode()
        future: asyncio.Future[Any] = asyncio.Future()
        future.add_done_callback(lambda _: self._resp_map.pop(key, None))
        self._resp_map[key] = future
        try:
            await self.publish(subject, payload, reply=inbox.decode(), headers=headers)
        except BaseException:
            del self._resp_map[key]  # now: the done callback would run only once the loop turns
            future.cancel()
            raise
        try:
            # A timeout or a cancellation cancels the future, whose callback takes it out.
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise errors.TimeoutError from None

    async def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT) -> None:
        if timeout <= 0:
            raise errors.BadTimeoutError
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while not self.is_connected:
                        if self.is_closed:
                            raise errors.ConnectionClosedError
                        await asyncio.sleep(RECONNECT_POLL_S)
                    if self._reading_task is None or self._reading_task.done():
                        await self._flush_pending()  # nats-py's way for a client whose tasks died
                        return
                    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                    self._flushes.add(future)
                    try:
                        await self._send_ping(future)
                        await future
                        return
                    except _PingLost:
                        continue  # sent again once connected again
                    finally:
                        self._flushes.discard(future)
        except TimeoutError:
            raise errors.FlushTimeoutError from None

    async def _process_connect_init(self) -> None:
        # A new connection: the PONGs owed on the old one will never come.
        for future in self._flushes:
            if not future.done():
                future.set_exception(_PingLost())
        await super()._process_connect_init()

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():  # a flush given up (see the module's docstring)
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0

    def _unreadable(self, part: str, raw: bytes, exc: UnicodeDecodeError) -> None:
        self.unreadable += 1
        verdict = self._unreadable_logs.check(part, time.monotonic())
        if verdict.allowed or verdict.log:
            log.warning(
                "bus.unreadable_message",
                part=part,
                raw=raw.decode(errors="replace"),
                error=str(exc),
                unreadable=self.unreadable,
                hint="a sender wrote bytes that are not UTF-8 there; the message is read without them",
            )
