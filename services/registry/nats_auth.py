"""NATS identities and permissions: who may publish and subscribe where.

Every client authenticates with an nkey (an Ed25519 key pair): the server's
configuration holds only public keys, and each enrolled host gets its own
key pair at enrollment, never shared. A host may publish only on its own
subjects (reports only of the kinds there are) and subscribe only to its own
reply inbox; its placements reach it through one durable JetStream consumer,
which the registry creates, and which is the only JetStream object the host
may read or acknowledge.

NATS does not check the reply subject a request names: the services check
it themselves before answering (potluck.events' ReplyGuard), so a host's
request is answered only into the host's own inbox. JetStream does not: it
answers a pull request on the host's own consumer (and an acknowledgement
that asks for one) into whatever reply subject the host names, so a host can
have the server publish its answers (empty status messages, its own events)
onto subjects its permissions refuse, another host's report subjects among
them, and push that host's unread reports out of the subject's bound. Nothing
is lost for good: the allocator judges each host by the state report hostd
sends after every reconnect and every `state_report_interval_s` (5 minutes),
and drops what is not a report as a dead letter. What such a host can still
do is flood: fill the reports stream with such answers (some ten million of
them make its 1 GiB), after which it refuses every host's reports until they
age out or an operator purges it. A denial of service, not a forgery (the
answers carry no report of the host's making); closing it needs nats-server
to check the reply subject (nats-io/nats-server#8274 names the same for push
consumers) or hosts in an account of their own. Nor are the reports stream's
subjects the only ones: the answers land on any subject named, and the events
and dead-letter streams keep what lands on theirs (1,000 consumer-info requests
naming `potluck.evt.alloc.AllocationPlaced.<another host>` stored 1,000 answers,
777 KB, in the events stream). Both drop their oldest when full, so a long
enough flood pushes out events a hostd away has not read yet (it catches up
from the allocator's snapshot when it reconnects) and older dead letters; the
host the subject names reads the answers as messages that are no event, dead
letters them on its own subject and logs them sparingly. The same answers can
land on another host's heartbeat and request subjects: there they cost that host
nothing, since the registry and the allocator charge a message to a host's
rate only once it is the host's (a Heartbeat with no reply subject and no
headers; a request naming a reply in the host's own inbox).

What one host's key may cost the server as a whole is bounded per connection
(libs/localstack's NATS_CLIENT_LIMITS: subscriptions, payload) by nats-server, and per
key by the registry: nats-server's configuration file has no bound per user, only per
account (`limits { max_connections, ... }`), and all clients share one account here, so
a key could open connections until the server's `max_connections` (64K by default; each
idle one some 65 KB of the server's memory, each with up to 1,024 subscriptions and
64 MiB of unread answers). The registry's connection watch (connection_caps.py,
connection_watch.py) counts each host key's connections on nats-server's monitoring
endpoint every 2 s and takes a host whose keys (its own, its join token's) hold more than 8
out of this file for a cooldown (HostConnectionsCapped; admitted_keys.py), which closes
all of them. What is left: a key
opens connections for up to one look (2 s) before it is shut out, and for as long again
each time it is let back in (each cap twice as long as the last, up to an hour).
Accounts were measured and set aside for this: an account beside the implicit global one
turns JetStream off for the global one (nats-server#4138, `$G` cannot be named), so every
client and JetStream's data would have to move to a named account. Hosts in accounts of
their own, with the services' subjects and the host's consumer imported, would bound
connections in the server and close the reply-subject floods above too.

The authorization file is rendered from the event log (enrolled hosts) plus
the central services' public keys, and nats-server is told to reload it.
"""

import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import nkeys
import structlog

from potluck.contracts.nkey import USER_KEY_CHARS, user_key_problem
from potluck.contracts.reports import AnyReport
from potluck.contracts.subjects import (
    HEARTBEAT,
    JOIN,
    LOG_TAIL,
    REPORT_PREFIX,
    host_consumer,
    host_rpc_filter,
    host_subject,
    inbox_prefix,
    join_inbox_prefix,
    validate_host_id,
)
from potluck.events import EVENTS_STREAM
from potluck.kernel.private_files import replace_private

log = structlog.get_logger(__name__)

#: What a host may report, one subject each: the report kinds, and hostd's own dead letters
#: (`potluck.report.<id>.dead_letter`, hostd's Subscriber). Only these, so the reports stream's
#: per-subject bound is a bound per host and kind: a host cannot spread a flood over subjects
#: it makes up.
REPORT_KINDS: tuple[str, ...] = (
    *sorted(str(model.model_fields["kind"].default) for model in get_args(AnyReport)),
    "dead_letter",
)


@dataclass(frozen=True)
class KeyPair:
    seed: str
    public: str


def new_user_key() -> KeyPair:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return KeyPair(seed=seed.decode(), public=nkeys.from_seed(seed).public_key.decode())


def public_key_of(seed: str) -> str:
    return str(nkeys.from_seed(seed.encode()).public_key.decode())


def host_permissions(host_id: str) -> dict[str, Any]:
    consumer = host_consumer(host_id)
    return {
        "publish": {
            "allow": [
                host_subject(HEARTBEAT, host_id),
                *(f"{REPORT_PREFIX}.{host_id}.{kind}" for kind in REPORT_KINDS),
                host_rpc_filter(host_id),
                f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{consumer}",
                f"$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.{consumer}",
                f"$JS.ACK.{EVENTS_STREAM}.{consumer}.>",
            ]
        },
        # Its own log-tail requests (only services may send them), answered once each into the
        # asker's inbox: allow_responses lets it publish to a reply subject it was given, nowhere else.
        "subscribe": {"allow": [f"{inbox_prefix(host_id)}.>", host_subject(LOG_TAIL, host_id)]},
        "allow_responses": {"max": 1, "expires": "30s"},
    }


def join_permissions(host_id: str) -> dict[str, Any]:
    """A join token's throwaway identity: ask to join as this host, read the answer; nothing else.

    The answer comes into an inbox of its own (join_inbox_prefix), never the host's: the
    throwaway stays admitted a while after the join (admitted_keys.JOIN_ANSWER_WINDOW), and up
    to the token's expiry before it, and anyone holding a copy of the token could otherwise
    read, meanwhile, what the machine that joined is sent (its events, the services' answers)."""
    return {
        "publish": {"allow": [host_subject(JOIN, host_id)]},
        "subscribe": {"allow": [f"{join_inbox_prefix(host_id)}.>"]},
    }


def render_authorization(
    service_keys: Iterable[str],
    hosts: Iterable[tuple[str, str]],
    joining: Iterable[tuple[str, str]] = (),
) -> str:
    """nats-server configuration (JSON is valid NATS config) for services, (host_id, nkey) pairs,
    and the (host_id, throwaway nkey) pairs of unspent join tokens."""
    services = sorted(set(service_keys))
    users: list[dict[str, Any]] = [{"nkey": key} for key in services]
    held = [(h, key, host_permissions) for h, key in sorted(hosts)]
    held += [(h, key, join_permissions) for h, key in sorted(set(joining))]
    admissible = _admissible(set(services), held)
    for host_id, key, permissions in held:
        if key in admissible:
            users.append({"nkey": key, "permissions": permissions(validate_host_id(host_id))})
    return json.dumps({"authorization": {"users": users}}, indent=2) + "\n"


def _admissible(services: set[str], held: list[tuple[str, str, Any]]) -> set[str]:
    """The hosts' keys the file may list: user keys, each held by one host only, none a service's.

    nats-server refuses a whole users file for one key that is no user's or one listed twice,
    and keeps the file it had: every later reload fails (no new machine connects, no revoked
    one is cut off), and a restarted nats-server does not start. The registry refuses such
    keys where they come in (joining.py, JoinRequest); one the log holds all the same (logged
    before those checks) is left out here, with an error, rather than break the file. A key
    listed twice (two hosts', or a host's and a join token's) is left out for both: which of
    them holds its seed nobody can tell."""
    claims: dict[str, list[str]] = {}
    for host_id, key, _ in held:
        claims.setdefault(key, []).append(host_id)
    admissible: set[str] = set()
    for key, holders in claims.items():
        problem = user_key_problem(key)
        if problem is None and key in services:
            problem = "it is the services' key"
        elif problem is None and len(holders) > 1:
            problem = "it is listed more than once"
        if problem is None:
            admissible.add(key)
        else:
            log.error(
                "registry.nats_key_left_out",
                hosts=sorted(holders),
                nkey=key[:USER_KEY_CHARS],
                problem=problem,
                hint="nats-server cannot load a users file with it; those hosts cannot connect "
                "until an operator revokes them and enrolls the machines anew",
            )
    return admissible


def write_authorization(path: Path, text: str) -> bool:
    """Replace the file atomically (owner-only from its first byte); returns whether anything
    changed. Each writer has a temporary file of its own: the registry and an operator's
    `ops hosts enroll` (or two registries) render it at the same moment, and with one fixed
    temporary name one writer's replace took the other's file from under its chmod."""
    if path.exists() and path.read_text() == text:
        return False
    replace_private(path, text)
    return True


def reload_nats(pid_file: Path) -> int | None:
    """Ask the nats-server whose PID is in `pid_file` to reload its configuration (SIGHUP).

    None, sending nothing, when that PID is no live nats-server: nats-server leaves its PID file
    behind when it stops, and the PID may be another program's by then, which SIGHUP would end.
    A stopped nats-server reads the users file when it starts."""
    pid = int(pid_file.read_text().strip())
    if not _is_nats_server(pid):
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:  # ended since we looked
        return None
    return pid


def _is_nats_server(pid: int) -> bool:
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs to ask: only whether the PID is alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            pass
        return True
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and Path(argv[0].decode(errors="replace")).name.startswith("nats-server")
