"""The bus side of the log: JetStream streams, subjects and message headers.

Subjects carry what consumers filter on and what NATS permissions check:

    potluck.evt.<category>.<Type>[.<routing key>]   logged events, in log order
    potluck.report.<host_id>.<kind>                 what a hostd reports
    potluck.dlq.<consumer>                          messages a consumer could not apply
    potluck.hb.<host_id>                            heartbeats (core NATS, no stream)
    potluck.rpc.<service>.<verb>                    request/reply

JetStream is derived from the Postgres log and never the only copy of a fact,
so the streams keep the server's default fsync interval (see bench/README.md
for the figures behind that choice).

Every stream is bounded by age, by size, by message size and per subject, so
no publisher in a loop fills the server's disk; which messages a full stream
or subject gives up is chosen so that nothing the log still needs is lost:

- events: a copy of the log, published by the relay only. Full, it drops its
  oldest (as age already does): Postgres keeps every event, and a hostd
  catches up from the allocator's snapshot when it starts and reconnects. A
  subject is one event type routed to one host, so the per-subject bound
  keeps one host's share from pushing out the others'.
- reports: what hostd publishes, each host only on `potluck.report.<its
  id>.<kind>` for the kinds there are (NATS permissions), so the per-subject
  bound is per host and kind. A subject over its bound drops its own oldest:
  a host in a loop pushes out only its own reports, never another host's the
  allocator has not read yet (JetStream's answers to a host's pull requests
  can land on any subject: services/registry/nats_auth.py says what makes
  that good). No legitimate host comes near the bound with
  reports the log needs: `started`/`exited`/`failed` come once per
  allocation, and `state`, `usage`, `engine` each supersede the one before.
  A stream full as a whole refuses new reports (discard new) rather than
  drop anyone's unread ones: hostd retries, and nothing stored is lost.
- dead letters: kept for an operator to look at; full, the oldest go first,
  and the per-subject (per consumer) bound keeps one consumer's flood from
  pushing out the others' dead letters.

`ensure_streams` applies the limits to streams an older version made, too.

Replicas: on a NATS cluster each stream can be kept on several nodes
(`--stream-replicas` / POTLUCK_STREAM_REPLICAS, 3 on a three-node cluster),
so that losing a node loses no stream and stops no consumer. Consumers inherit
their stream's replicas. Only a service's start says how many replicas it
wants; the relay and subscribers, which ensure the streams again after an
outage, keep whatever replicas the streams already have, so they never undo
an operator's choice.
"""

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from potluck.events.schema import RecordedEvent
from potluck.kernel.raised_in import raised_in

log = structlog.get_logger(__name__)

#: Errors that mean "the bus is away for now", as opposed to a bug. Here rather than in the relay,
#: which uses them too, so that a process that only talks to the bus (hostd) need not load the
#: relay and the store behind it.
TRANSIENT_BUS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    NoStreamResponseError,
    asyncio.TimeoutError,
)

#: NATS's own among them: the bus's, whatever raised them.
_RAISED_BY_NATS = tuple(e for e in TRANSIENT_BUS_ERRORS if e.__module__.startswith("nats."))


def bus_away(exc: BaseException) -> bool:
    """Whether `exc` means the bus is away for now: NATS's own transient errors, or an OSError
    or a timeout raised through nats-py's calls (a timeout of the process's own is not; see
    potluck.events.database_away, the same reading for the database)."""
    if isinstance(exc, _RAISED_BY_NATS):
        return True
    return isinstance(exc, OSError | TimeoutError) and raised_in(exc, ("nats",))


#: What JetStream answers (or fails to) while it is not ready for a stream request yet: a
#: cluster forming a replicated stream's raft group, a leader being elected, a server starting.
_NOT_READY = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)

EVENTS_STREAM = "POTLUCK_EVENTS"
REPORTS_STREAM = "POTLUCK_REPORTS"
DEAD_LETTER_STREAM = "POTLUCK_DEAD_LETTERS"

#: Subject prefixes of the streams: logged events, hostd's reports, dead letters.
EVENT_PREFIX = "potluck.evt"
REPORT_PREFIX = "potluck.report"
DEAD_LETTER_PREFIX = "potluck.dlq"

# Headers set by the relay on every logged event.
H_MSG_ID = "Nats-Msg-Id"
H_POSITION = "Potluck-Position"
H_STREAM = "Potluck-Stream"
H_VERSION = "Potluck-Version"
H_TYPE = "Potluck-Type"
H_SCHEMA_VERSION = "Potluck-Schema-Version"
H_METADATA = "Potluck-Metadata"
# Headers set on a dead letter.
H_DLQ_REASON = "Potluck-Dead-Letter-Reason"
H_DLQ_SUBJECT = "Potluck-Original-Subject"
H_DLQ_CONSUMER = "Potluck-Consumer"

#: JetStream drops a republished Nats-Msg-Id seen within this window. Longer
#: outages are covered by consumers' position checks, not by this window.
DUPLICATE_WINDOW_S = 120.0


def event_subject(record: RecordedEvent) -> str:
    subject = f"{EVENT_PREFIX}.{record.category}.{record.type}"
    key = record.metadata.get("routing_key")
    return f"{subject}.{key}" if key else subject


def dead_letter_subject(consumer: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{consumer}"


MiB = 1 << 20
#: No bound of the stream's own: the server's max_payload (1 MiB by default) bounds every message,
#: and a relayed event or a dead letter (a copy of what could not be applied) must always fit.
NO_LIMIT = -1


#: Consumers a stream may have: every host has its own on the events stream. nats-server (2.15)
#: gives a stream that sets none a limit of 1,000, and takes -1 for that default too, so a pool
#: past a thousand hosts could not register one more (`maximum consumers limit reached`).
MAX_CONSUMERS = 100_000


@dataclass(frozen=True)
class StreamSpec:
    """A stream's subjects and limits (see the module's docstring for each discard policy)."""

    name: str
    subjects: list[str]
    max_age_s: float
    max_bytes: int
    max_msgs_per_subject: int
    max_msg_size: int
    #: What a full stream does: drop its oldest (OLD) or refuse the newest (NEW). A subject over
    #: its own bound always drops its own oldest.
    discard: DiscardPolicy

    def config(self, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            num_replicas=replicas,
            name=self.name,
            subjects=self.subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=self.discard,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            max_msgs_per_subject=self.max_msgs_per_subject,
            max_msg_size=self.max_msg_size,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_consumers=MAX_CONSUMERS,
        )


STREAMS = (
    StreamSpec(
        EVENTS_STREAM,
        [f"{EVENT_PREFIX}.>"],
        max_age_s=7 * 86400,
        max_bytes=1024 * MiB,
        max_msgs_per_subject=100_000,
        max_msg_size=NO_LIMIT,
        discard=DiscardPolicy.OLD,
    ),
    StreamSpec(
        REPORTS_STREAM,
        [f"{REPORT_PREFIX}.>"],
        max_age_s=7 * 86400,
        max_bytes=1024 * MiB,
        # A host holds at most kinds x 100 x 64 KiB (about 45 MiB): it takes over twenty hosts
        # flooding at once to fill the stream. 64 KiB is an ActualState of some 300 containers.
        max_msgs_per_subject=100,
        max_msg_size=64 * 1024,
        discard=DiscardPolicy.NEW,
    ),
    StreamSpec(
        DEAD_LETTER_STREAM,
        [f"{DEAD_LETTER_PREFIX}.>"],
        max_age_s=30 * 86400,
        max_bytes=256 * MiB,
        max_msgs_per_subject=10_000,
        max_msg_size=NO_LIMIT,
        discard=DiscardPolicy.OLD,
    ),
)

#: The streams by name.
STREAM_SPECS = {spec.name: spec for spec in STREAMS}


#: JetStream keeps at most this many copies of a stream (nats-server refuses more).
MAX_REPLICAS = 5


class StreamReplicasError(RuntimeError):
    """The servers cannot keep a stream on as many nodes as asked (a single server, a small cluster)."""


def check_replicas(replicas: int) -> int:
    """`replicas`, if JetStream can keep that many copies; a clear error if not."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(
            f"stream replicas must be between 1 and {MAX_REPLICAS}, not {replicas}: "
            "use 1 on a single nats-server and 3 on a three-node cluster"
        )
    return replicas


def replicas_to_apply(existing: int | None, wanted: int | None) -> int:
    """How many replicas a stream gets: what was asked for, else what it has (1 when new).

    `existing` is None for a stream not there yet; `wanted` is None for a caller with
    no say (the relay, subscribers), which must never scale a stream back down.
    """
    if wanted is not None:
        return check_replicas(wanted)
    return existing or 1


async def ensure_streams(
    js: JetStreamContext, replicas: int | None = None, *, patience_s: float = 60.0
) -> None:
    """Create Potluck's streams, or give existing ones (an older version's too) today's limits;
    safe to call from every service at start.

    `replicas` scales the streams to that many copies (an existing stream too); None keeps
    the copies each stream has. A server that cannot keep that many raises StreamReplicasError.
    While JetStream is not ready (creating a replicated stream on a cluster takes seconds, and
    several services starting at once ask together) it asks again for up to `patience_s`.
    """
    deadline = asyncio.get_running_loop().time() + patience_s
    delay = 0.5
    while True:
        try:
            return await _ensure_streams_once(js, replicas)
        except _NOT_READY as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("bus.streams_not_ready", error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _ensure_streams_once(js: JetStreamContext, replicas: int | None) -> None:
    for spec in STREAMS:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            config = spec.config(replicas_to_apply(None, replicas))
            await _applying(spec.name, config, js.add_stream(config))
        else:
            config = spec.config(replicas_to_apply(info.config.num_replicas, replicas))
            await _applying(spec.name, config, js.update_stream(config))


async def streams_exist(js: JetStreamContext) -> bool:
    """Whether each of Potluck's streams exists. Asked of JetStream's meta leader (the stream
    names by subject), which answers while a stream elects a leader of its own; `stream_info`
    would wait out its timeout then."""
    for spec in STREAMS:
        try:
            if await js.find_stream_name_by_subject(spec.subjects[0]) != spec.name:
                return False
        except NotFoundError:
            return False
    return True


async def _applying(name: str, config: StreamConfig, request: Awaitable[object]) -> None:
    try:
        await request
    except NotFoundError:
        raise
    except APIError as exc:
        if config.num_replicas is not None and config.num_replicas > 1 and "replica" in str(exc).lower():
            raise StreamReplicasError(
                f"NATS cannot keep stream {name} on {config.num_replicas} nodes ({exc.description}): "
                "run a NATS cluster with at least that many nodes, or set --stream-replicas "
                "(POTLUCK_STREAM_REPLICAS) to 1 for a single nats-server"
            ) from exc
        raise
