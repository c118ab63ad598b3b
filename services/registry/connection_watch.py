"""The registry's watch on how many NATS connections each host's key holds (connection_caps.py decides).

Every `interval_s` it reads nats-server's monitoring endpoint (`/connz?auth=true`, every node
given, page by page), and for each host past the limit records HostConnectionsCapped on the
host's stream and renders the users file without the host's key: nats-server closes every
connection of a key a reload removes (a moment after the event, so that the host's hostd
learns of the cap first and does not take the refusals as a revocation). The users-file
keeper renders it again when the cap ends (admitted_keys.next_key_change), and the host's
hostd, which keeps reconnecting, is back.

A monitoring endpoint that does not answer is logged and read again at the next look: no
decision is taken on a partial count (a node not read would count as no connections).
"""

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from potluck.events import Event, EventStore
from potluck.readmodels.hosts import HostState, HostsView
from potluck.registry import host as aggregate
from potluck.registry.connection_caps import Cap, CapPolicy, caps_due, count_connections
from potluck.registry.repository import decide_on_host
from potluck.registry.users_file import UsersFileKeeper

__all__ = ["ConnectionWatch", "MonitorUnread"]

log = structlog.get_logger(__name__)

#: Connections asked for per page of /connz; nats-server's own default page is 1,024.
PAGE = 1024
#: Pages read from one node at one look at most (a million connections): a bound on one look's
#: work, far past what a server holds (its own max_connections is 64K by default).
MAX_PAGES = 1024
#: One request to a monitoring endpoint.
REQUEST_TIMEOUT_S = 5.0
#: Looks in a row that could not read the endpoint, logged for the first and then once per this many.
UNREAD_LOGGED_EVERY = 30


class MonitorUnread(Exception):
    """A node's monitoring endpoint did not answer as nats-server's does."""


class ConnectionWatch:
    def __init__(
        self,
        store: EventStore,
        fresh_view: Callable[[], Awaitable[HostsView]],
        users_file: UsersFileKeeper,
        monitor_urls: Sequence[str],
        service_keys: Iterable[str],
        *,
        policy: CapPolicy | None = None,
        interval_s: float = 2.0,
        notice_s: float = 1.0,
    ) -> None:
        if not monitor_urls:
            raise ValueError(
                "the connection watch needs nats-server's monitoring URL (http://127.0.0.1:8222)"
            )
        self.store = store
        self.fresh_view = fresh_view
        self.users_file = users_file
        self.monitor_urls = [url.rstrip("/") for url in monitor_urls]
        self.service_keys = frozenset(service_keys)
        self.policy = policy or CapPolicy()
        self.interval_s = interval_s
        self.notice_s = notice_s

    async def run(self) -> None:
        """Look every `interval_s` until cancelled; a look that fails is logged and taken again."""
        unread = 0
        while True:
            try:
                await self.look()
                if unread:
                    log.info("registry.connections_read_again", after_failed_looks=unread)
                unread = 0
            except (MonitorUnread, OSError) as exc:  # urllib's errors are OSErrors
                unread += 1
                if unread % UNREAD_LOGGED_EVERY == 1:  # not a line every 2 s while it is away
                    log.warning(
                        "registry.connections_unread",
                        urls=self.monitor_urls,
                        failed_looks=unread,
                        error=str(exc)[:500],
                        hint="hosts' connections are not bounded while nats-server's monitoring "
                        "endpoint cannot be read: check its `http` setting and --nats-monitor-url",
                    )
            except Exception:  # the database away, a render that failed: look again later
                log.exception("registry.connection_watch_failed")
            await asyncio.sleep(self.interval_s)

    async def look(self) -> list[Cap]:
        """Count every node's connections per key; cap the hosts past the limit. The caps recorded."""
        pages: list[Mapping[str, Any]] = []
        for url in self.monitor_urls:
            # urllib, in a thread: the registry serves no HTTP and loads no HTTP client library.
            pages += await asyncio.to_thread(_connz_pages, url)
        counts = count_connections(pages)
        view = await self.fresh_view()
        now = await self.store.log_clock()
        recorded: list[Cap] = []
        for cap in caps_due(counts, view.hosts.values(), self.service_keys, now, self.policy):
            outcome = await decide_on_host(
                self.store, cap.host_id, self._decide(cap, now), {"actor": "registry"}
            )
            if outcome.events:
                recorded.append(cap)
                log.warning(
                    "registry.host_connections_capped",
                    host_id=cap.host_id,
                    connections=cap.connections,
                    limit=self.policy.limit,
                    until=cap.until.isoformat(),
                    hint="the host's NATS key held more connections than a host may; it is out of the "
                    "users file until then (all its connections closed), and reads as unreachable",
                )
        if recorded:
            # The event reaches the host's hostd (its consumer follows its host's events) before
            # its connection is closed: it then takes the refusals until the cap ends as what
            # they are, not as a revocation (which would stop its containers for good).
            await asyncio.sleep(self.notice_s)
            await self.users_file.render()
            for cap in recorded:
                self.users_file.render_again_at(cap.until)
        return recorded

    def _decide(self, cap: Cap, now: datetime) -> Callable[[HostState | None], list[Event]]:
        """The cap decided on the host's stream as the log has it (the view may lag)."""
        return lambda state: aggregate.cap_connections(
            state, cap.host_id, cap.connections, self.policy.limit, cap.until, now
        )


def _connz_pages(base: str) -> list[Mapping[str, Any]]:
    """Every page of one node's open client connections, with the key each authenticated with."""
    pages: list[Mapping[str, Any]] = []
    offset = 0
    for _ in range(MAX_PAGES):
        url = f"{base}/connz?auth=true&state=open&limit={PAGE}&offset={offset}"
        try:
            with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise MonitorUnread(f"{url} answered HTTP {exc.code}") from exc
        try:
            page = json.loads(body)
        except ValueError as exc:
            raise MonitorUnread(f"{url} answered no JSON: {exc}") from exc
        if not isinstance(page, dict):
            raise MonitorUnread(f"{url} answered {type(page).__name__}, not a JSON object")
        pages.append(page)
        held = len(page.get("connections") or ())
        offset += held
        if held == 0 or offset >= int(page.get("total", 0)):
            break
    return pages
