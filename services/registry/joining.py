"""A new member's machine redeems its join token (JOIN.<host_id>, asked with the token's throwaway key).

The Host aggregate decides (host.py `join`: unknown, spent or expired tokens and gone hosts
are refused, each with its own code); HostJoined records the public key the machine made
for itself. Before answering, the NATS users file is rendered again with that key in it and
nats-server reloads, so the member can connect as itself as soon as it reads the answer.

The throwaway key stays in the file for that answer: nats-server closes the connections of
users a reload removes, and the answer travels on the throwaway's connection. How long is
the log's to say (`JOIN_ANSWER_WINDOW` after HostJoined, on the log's clock), so every render
keeps it, whoever makes it; the registry's UsersFileKeeper (users_file.py) renders again once
the window has ended.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from potluck.contracts.join_token import secret_digest
from potluck.contracts.messages import JoinRequest
from potluck.events import EventStore
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.admitted_keys import JOIN_ANSWER_WINDOW
from potluck.registry.claims import Claims
from potluck.registry.nats_auth import public_key_of
from potluck.registry.repository import decide_on_host
from potluck.registry.users_file import UsersFileKeeper

__all__ = ["JoinHandler"]

log = structlog.get_logger(__name__)


@dataclass
class JoinHandler:
    store: EventStore
    view: HostsView
    #: None: the registry runs without --nats-auth-file, and cannot admit a key.
    users_file: UsersFileKeeper | None
    #: Each key checked against the whole log, one claim of it at a time (claims.py).
    claims: Claims
    #: How long nats-server gets to apply a reload (SIGHUP is answered asynchronously).
    reload_settle_s: float = 0.3

    async def join(self, host_id: str, payload: bytes) -> dict[str, Any]:
        req = JoinRequest.model_validate_json(payload)
        if self.users_file is None:
            raise Rejected(
                "JOIN_UNAVAILABLE",
                "this pool's registry runs without --nats-auth-file, so it cannot admit a new key; "
                "ask the operator to enroll with --credentials-out instead",
                status=503,
            )
        async with self.claims.claiming("nkey", req.nkey):
            self._refuse_taken_key(host_id, req.nkey)
            now = await self.store.log_clock()
            outcome = await decide_on_host(
                self.store,
                host_id,
                lambda s: aggregate.join(
                    s, host_id, token_sha256=secret_digest(req.token), nkey=req.nkey, now=now
                ),
                {"actor": f"host:{host_id}"},
                known=lambda: self.view.hosts.get(host_id),
            )
        # The log keeps the throwaway in for JOIN_ANSWER_WINDOW; named here too, so that the
        # answer still travels on it should this render come after the window (a slow database).
        throwaway = outcome.state.join_nkey if outcome.state is not None else ""
        await self.users_file.render(also_joining=[(host_id, throwaway)] if throwaway else [])
        await asyncio.sleep(self.reload_settle_s)
        log.info("registry.host_joined", host_id=host_id, nkey=req.nkey)
        # HostJoined was logged before this reading, so its window ends before this deadline.
        self.users_file.answered(await self.store.log_clock() + JOIN_ANSWER_WINDOW)
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}

    def _refuse_taken_key(self, host_id: str, nkey: str) -> None:
        """NKEY_TAKEN when `nkey` is a key the pool knows already: the services', any machine's
        own (revoked and left ones too), any join token's throwaway (this one's included).

        A machine makes its key pair itself, so a key that is someone's already was copied, not
        made. nats-server refuses a users file that lists one key twice and keeps its old one
        (every reload after fails: no new machine connects, no revoked one is cut off); and a
        key listed under this host would let whoever holds its seed act as this host."""
        assert self.users_file is not None  # checked by the caller
        known = {public_key_of(seed) for seed in self.users_file.auth.service_seeds()}
        for h in self.view.hosts.values():
            known |= {h.join_nkey, h.spent_join_nkey}
            # This host's own key again is a join run again after its answer was lost: the
            # aggregate answers that one (TOKEN_SPENT), as it did before keys were checked here.
            if h.host_id != host_id:
                known.add(h.nkey)
        if nkey in known:
            log.warning("registry.join_key_taken", host_id=host_id, nkey=nkey)
            raise Rejected(
                "NKEY_TAKEN",
                "this key is already known to the pool; a machine that joins makes a key pair of its "
                "own (`potluck join` does): join with a new one",
                field="nkey",
                status=409,
            )
