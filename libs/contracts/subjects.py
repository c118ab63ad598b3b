"""Every NATS subject that crosses between Potluck's processes, and how a host id sits in it.

Subjects end in the host id wherever a host publishes, and NATS permissions
(the registry's nats_auth) let a host publish only on its own, so a service
takes the host's identity from the subject NATS authorised and never from a
payload field. The streams' own prefixes (`potluck.evt`, `potluck.report`,
`potluck.dlq`) belong to the event library's bus module.
"""

from potluck.events.bus import EVENT_PREFIX, REPORT_PREFIX

__all__ = [
    "ALLOCATOR_STATE",
    "CONTROL",
    "DESIRED",
    "HEARTBEAT",
    "HOST_ID_ALPHABET",
    "IMAGE_TOKEN",
    "JOIN",
    "LIST_HOSTS",
    "LOG_TAIL",
    "POLICY",
    "REGISTER",
    "REPORT_PREFIX",
    "RPC_PREFIX",
    "SERVICE_INBOX",
    "SLEEP",
    "STATUS",
    "host_consumer",
    "host_event_filter",
    "host_of",
    "host_rpc_filter",
    "host_subject",
    "inbox_prefix",
    "join_inbox_prefix",
    "validate_host_id",
]

RPC_PREFIX = "potluck.rpc"

# Requests a host makes, each followed by `.<host_id>` (see host_subject).
REGISTER = f"{RPC_PREFIX}.registry.register"
CONTROL = f"{RPC_PREFIX}.registry.control"
STATUS = f"{RPC_PREFIX}.registry.status"
DESIRED = f"{RPC_PREFIX}.allocator.desired"
#: The machine is about to sleep, or slept and woke (SleepNotice).
SLEEP = f"{RPC_PREFIX}.registry.sleep"
#: The owner policy changed the pool's share here (PolicyChanged).
POLICY = f"{RPC_PREFIX}.registry.policy"
#: A new member's machine redeems its join token (JoinRequest); asked with the token's
#: throwaway identity, whose only permission this is.
JOIN = f"{RPC_PREFIX}.registry.join"
#: A registry token to pull the image of one of the host's own allocations (ImageTokenRequest).
IMAGE_TOKEN = f"{RPC_PREFIX}.allocator.image_token"
#: Heartbeats (core NATS, no stream), followed by `.<host_id>`.
HEARTBEAT = "potluck.hb"

#: Requests to a host, followed by `.<host_id>`: one page of an allocation's container log
#: (log_tail.py). Only services may ask; only that host subscribes (nats_auth).
LOG_TAIL = "potluck.logs"

#: Operators and services only: hosts may publish solely on subjects ending in their id.
LIST_HOSTS = f"{RPC_PREFIX}.registry.hosts"
#: Operators and services only: the allocator's read models, for `replay --check`.
ALLOCATOR_STATE = f"{RPC_PREFIX}.allocator.state"

HOST_ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def validate_host_id(host_id: str) -> str:
    """A host id is one subject token: 1-64 of [a-z0-9-]."""
    if not host_id or not set(host_id) <= HOST_ID_ALPHABET or len(host_id) > 64:
        raise ValueError(f"host id {host_id!r} must be 1-64 of [a-z0-9-]")
    return host_id


def host_subject(prefix: str, host_id: str) -> str:
    return f"{prefix}.{host_id}"


def host_of(subject: str) -> str:
    """The host id NATS authorised: the subject's last token."""
    return subject.rsplit(".", 1)[-1]


def host_rpc_filter(host_id: str) -> str:
    """Every request subject a host may publish on."""
    return f"{RPC_PREFIX}.*.*.{host_id}"


def inbox_prefix(host_id: str) -> str:
    """The host's own reply inboxes: no host can read another's replies."""
    return f"_INBOX_{host_id}"


def join_inbox_prefix(host_id: str) -> str:
    """The reply inboxes of a join token's throwaway identity: apart from the host's own, so
    that whoever else holds a copy of the token reads nothing sent to the machine that joined
    (the events its consumer delivers into its inbox, the services' answers). No host id
    starts with JOIN (they are lower case), so no host's inbox is under it."""
    return f"_INBOX_JOIN_{host_id}"


#: The services' reply inboxes (nats-py's default prefix): requests only services may send
#: (LIST_HOSTS, ALLOCATOR_STATE) are answered only there. Hosts' inboxes (`_INBOX_<id>`) are
#: a different first token, so no host inbox is ever under it.
SERVICE_INBOX = "_INBOX"


def host_consumer(host_id: str) -> str:
    """The durable consumer on the events stream that carries the host's events to its hostd."""
    return f"hostd-{host_id}"


def host_event_filter(host_id: str) -> str:
    """Logged events routed to the host (`potluck.evt.<category>.<Type>.<host_id>`)."""
    return f"{EVENT_PREFIX}.*.*.{host_id}"
