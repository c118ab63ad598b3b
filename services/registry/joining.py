"""A new member's machine redeems its join token (JOIN.<host_id>, asked with the token's throwaway key).

The Host aggregate decides (host.py `join`: unknown, spent or expired tokens and gone hosts
are refused, each with its own code); HostJoined records the public key the machine made
for itself. Before answering, the NATS users file is rendered again with that key in it and
nats-server reloads, so the member can connect as itself as soon as it reads the answer.

The throwaway key stays in the file for that answer: nats-server closes the connections of
users a reload removes, and the answer travels on the throwaway's connection. How long is
the log's to say (`JOIN_ANSWER_WINDOW` after HostJoined), so every render keeps it, whoever
makes it; the file is rendered again once the window has passed, which takes the key out.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from potluck.contracts.join_token import secret_digest
from potluck.contracts.messages import JoinRequest
from potluck.events import EventStore
from potluck.kernel.background import BackgroundTasks
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.enrollment import (
    JOIN_ANSWER_WINDOW,
    read_seed,
    refresh_nats_authorization,
    render_nats_authorization,
)
from potluck.registry.repository import decide_on_host

__all__ = ["JoinHandler", "NatsAuthFiles"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NatsAuthFiles:
    """What the registry needs to change who may connect: the users file nats-server includes,
    nats-server's PID file (to make it reload), and the services' seed, whose key stays in."""

    auth_file: Path
    pid_file: Path | None
    service_seed_file: Path

    def service_seeds(self) -> list[str]:
        return [read_seed(self.service_seed_file)]


@dataclass
class JoinHandler:
    store: EventStore
    view: HostsView
    auth: NatsAuthFiles | None
    #: How long nats-server gets to apply a reload (SIGHUP is answered asynchronously).
    reload_settle_s: float = 0.3
    #: When to render the users file again after a join, which takes the spent token's throwaway
    #: key out: once JOIN_ANSWER_WINDOW has passed.
    linger_s: float = JOIN_ANSWER_WINDOW.total_seconds() + 1.0
    _cleanups: BackgroundTasks = field(default_factory=BackgroundTasks)

    async def join(self, host_id: str, payload: bytes) -> dict[str, Any]:
        req = JoinRequest.model_validate_json(payload)
        if self.auth is None:
            raise Rejected(
                "JOIN_UNAVAILABLE",
                "this pool's registry runs without --nats-auth-file, so it cannot admit a new key; "
                "ask the operator to enroll with --credentials-out instead",
                status=503,
            )
        outcome = await decide_on_host(
            self.store,
            host_id,
            lambda s: aggregate.join(
                s, host_id, token_sha256=secret_digest(req.token), nkey=req.nkey, now=datetime.now(UTC)
            ),
            {"actor": f"host:{host_id}"},
            known=lambda: self.view.hosts.get(host_id),
        )
        # The log keeps the throwaway in for JOIN_ANSWER_WINDOW by its own clock; named here
        # too, so that this render keeps it whatever this machine's clock says of the log's.
        throwaway = outcome.state.join_nkey if outcome.state is not None else ""
        await self._refresh(also_joining=[(host_id, throwaway)] if throwaway else [])
        await asyncio.sleep(self.reload_settle_s)
        log.info("registry.host_joined", host_id=host_id, nkey=req.nkey)
        self._cleanups.start(self._forget_throwaway(host_id))
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}

    async def _refresh(self, *, also_joining: Sequence[tuple[str, str]] = ()) -> None:
        assert self.auth is not None
        await refresh_nats_authorization(
            self.store,
            self.auth.auth_file,
            self.auth.service_seeds(),
            self.auth.pid_file,
            also_joining=also_joining,
        )

    def render_at_start(self) -> None:
        """Render the users file from the registry's view as it starts: what changed while no
        registry ran (one that stopped between recording HostJoined and rendering the member's
        key, or before its cleanup took a spent throwaway out) is put right."""
        if self.auth is None:
            return
        try:
            changed = render_nats_authorization(
                self.view, self.auth.auth_file, self.auth.service_seeds(), self.auth.pid_file
            )
        except (OSError, ValueError) as exc:
            log.error(
                "registry.nats_users_unrendered",
                file=str(self.auth.auth_file),
                error=str(exc),
                hint="joins cannot admit keys until this registry can write --nats-auth-file and read "
                "--nats-seed-file; fix their permissions, then restart it",
            )
            return
        log.info("registry.nats_users_rendered", file=str(self.auth.auth_file), changed=changed)

    async def _forget_throwaway(self, host_id: str) -> None:
        await asyncio.sleep(self.linger_s)
        try:
            await self._refresh()
        except Exception:
            log.exception(
                "registry.join_cleanup_failed",
                host_id=host_id,
                hint="the spent token's key stays in the NATS users file until the next enrollment "
                "re-renders it; it can only ask to join, which is refused",
            )

    async def close(self) -> None:
        await self._cleanups.aclose()
