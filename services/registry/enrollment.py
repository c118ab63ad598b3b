"""Operator side of admitting (and evicting) a machine: a host id, its own NATS key pair, the NATS users file.

Enrollment runs the Host aggregate in the operator's process (with database
access, like the registry) and records HostEnrolled; the key pair's seed goes
only into the credentials file handed to the member, and the NATS
authorization file, rendered from the log, holds only public keys.
"""

import contextlib
import secrets
import tomllib
from pathlib import Path

from potluck.contracts.subjects import validate_host_id
from potluck.events import EventStore
from potluck.readmodels.hosts import HostState, HostsView
from potluck.registry import host as aggregate
from potluck.registry.nats_auth import (
    KeyPair,
    new_user_key,
    public_key_of,
    reload_nats,
    render_authorization,
    write_authorization,
)
from potluck.registry.projection import rebuild_view
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


async def current_hosts(store: EventStore) -> HostsView:
    view = HostsView()
    await rebuild_view(store, view)
    return view


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


def has_nats_key(state: HostState) -> bool:
    """Does the host keep its place in the NATS users file? Not once deregistered, left or revoked."""
    return state.admin != "deregistered" and not state.gone


async def refresh_nats_authorization(
    store: EventStore, auth_file: Path, service_seeds: list[str], pid_file: Path | None
) -> bool:
    """Render the users file from the log; reload nats-server when it changed.

    A host that left or was revoked has no key there any more: on the reload,
    nats-server closes its connections and refuses its key from then on.
    """
    view = await current_hosts(store)
    hosts = [(h.host_id, h.nkey) for h in view.hosts.values() if h.nkey and has_nats_key(h)]
    text = render_authorization([public_key_of(s) for s in service_seeds], hosts)
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
