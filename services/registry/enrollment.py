"""Operator side of admitting (and evicting) a machine: a host id, its own NATS key pair, the NATS users file.

Enrollment runs the Host aggregate in the operator's process (with database
access, like the registry) and records HostEnrolled; the key pair's seed goes
only into the credentials file handed to the member, and the NATS
authorization file, rendered from the log, holds only public keys.
"""

import contextlib
import secrets
import tomllib
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from potluck.contracts import join_token
from potluck.contracts.join_token import GatewayPin, JoinToken
from potluck.contracts.subjects import validate_host_id
from potluck.events import Event, EventStore
from potluck.readmodels.hosts import HostState, HostsView, evolve
from potluck.registry import host as aggregate
from potluck.registry.admitted_keys import host_keys, joining_keys
from potluck.registry.nats_auth import (
    KeyPair,
    new_user_key,
    public_key_of,
    reload_nats,
    render_authorization,
    write_authorization,
)
from potluck.registry.projection import resumed_view
from potluck.registry.repository import decide_on_host


def new_host_id() -> str:
    return f"h-{secrets.token_hex(6)}"


async def enroll_host(store: EventStore, name: str, *, host_id: str | None = None) -> tuple[str, KeyPair]:
    host_id = validate_host_id(host_id or new_host_id())
    key = new_user_key()
    await decide_on_host(
        store,
        host_id,
        lambda s: aggregate.enroll(s, host_id, name, key.public),
        {"actor": "operator"},
    )
    return host_id, key


async def enroll_with_token(
    store: EventStore,
    name: str,
    *,
    nats_url: str,
    gateways: Iterable[GatewayPin] = (),
    expires_in: timedelta = timedelta(hours=24),
    now: datetime | None = None,
) -> JoinToken:
    """Enroll a machine that will make its own key pair: HostEnrolled without a key, and a
    single-use join token (the log keeps its secret's digest and the throwaway public key).

    The token's expiry is on the log's clock (`now` by default), as every decision about it is."""
    aggregate.check_name(name)  # before the token, which holds the name too
    host_id = validate_host_id(new_host_id())
    throwaway = new_user_key()
    token = JoinToken(
        host_id=host_id,
        name=name,
        nats_url=nats_url,
        join_seed=throwaway.seed,
        secret=join_token.new_secret(),
        gateways=tuple(gateways),
        expires_at=(now or await store.log_clock()) + expires_in,
    )

    def decide(state: HostState | None) -> list[Event]:
        enrolled = aggregate.enroll(state, host_id, name, "")
        after = evolve(None, enrolled[0], 1, token.expires_at)
        return enrolled + aggregate.issue_token(
            after,
            host_id,
            token_sha256=join_token.secret_digest(token.secret),
            join_nkey=throwaway.public,
            expires_at=token.expires_at,
        )

    await decide_on_host(store, host_id, decide, {"actor": "operator"})
    return token


async def refuse_taken_name(store: EventStore, name: str) -> None:
    """NAME_TAKEN when a machine of the log holds `name` (host.name_holder), on the log's clock.

    An operator's check before enrolling, on the hosts as the log has them: two operators
    enrolling one name at the same moment could both pass it (names have no stream of their
    own to append on with an expected version)."""
    view = await current_hosts(store)
    aggregate.refuse_taken_name(view.hosts.values(), name, await store.log_clock())


async def current_hosts(store: EventStore) -> HostsView:
    """The hosts as the log has them now, resumed from the registry's checkpoint when there is
    one: an operator's command on a long log reads the tail, not the whole log."""
    return await resumed_view(store)


def write_credentials(path: Path, host_id: str, key: KeyPair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(
        "# Potluck host credentials: keep this file private to the member's machine.\n"
        f'host_id = "{host_id}"\n'
        f'nats_seed = "{key.seed}"\n'
    )


def read_seed(path: Path) -> str:
    """A services seed file: either the bare seed or a credentials file with `nats_seed`."""
    text = path.read_text().strip()
    if text.startswith("SU"):
        return text
    seed = tomllib.loads(text).get("nats_seed")
    if not isinstance(seed, str):
        raise ValueError(f"{path} holds no nkey seed")
    return seed


async def refresh_nats_authorization(
    store: EventStore,
    auth_file: Path,
    service_seeds: list[str],
    pid_file: Path | None,
    *,
    also_joining: Iterable[tuple[str, str]] = (),
) -> bool:
    """Render the users file from the log; reload nats-server when it changed.

    `also_joining` adds throwaway join keys the log does not list. A host revoked or made leave
    by an operator has no key there any more: on the reload, nats-server closes its connections
    (admitted_keys.py says which keys stay, and for how long). Which keys are still in their time
    is read on the log's clock, which wrote `joined_at` and `left_at`: an operator's machine
    whose clock runs ahead would otherwise drop a member's throwaway before its answer."""
    view = await current_hosts(store)
    now = await store.log_clock()
    return render_nats_authorization(view, auth_file, service_seeds, pid_file, now, also_joining=also_joining)


def render_nats_authorization(
    view: HostsView,
    auth_file: Path,
    service_seeds: list[str],
    pid_file: Path | None,
    now: datetime,
    *,
    also_joining: Iterable[tuple[str, str]] = (),
) -> bool:
    """`refresh_nats_authorization` from hosts already folded (a registry's own view), with the
    keys in their time at `now`."""
    joining = set(joining_keys(view, now)) | set(also_joining)
    text = render_authorization([public_key_of(s) for s in service_seeds], host_keys(view, now), joining)
    changed = write_authorization(auth_file, text)
    if changed and pid_file is not None:
        # No PID file: nats-server is not started yet and reads the file when it starts.
        with contextlib.suppress(FileNotFoundError):
            reload_nats(pid_file)
    return changed


async def revoke_host(store: EventStore, host_id: str, *, by: str, reason: str) -> list[str]:
    """Record HostRevoked (by whom, why); the types recorded, none when it was revoked already.

    Re-render the users file afterwards (`refresh_nats_authorization`): the key goes with it.
    """
    outcome = await decide_on_host(
        store,
        host_id,
        lambda s: aggregate.revoke(s, host_id, by, reason),
        {"actor": "operator"},
    )
    return [type(e).type_name for e in outcome.events]
