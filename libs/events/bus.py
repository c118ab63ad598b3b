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
"""

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from potluck.events.schema import RecordedEvent

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


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    max_age_s: float


STREAMS = (
    StreamSpec(EVENTS_STREAM, [f"{EVENT_PREFIX}.>"], 7 * 86400),
    StreamSpec(REPORTS_STREAM, [f"{REPORT_PREFIX}.>"], 7 * 86400),
    StreamSpec(DEAD_LETTER_STREAM, [f"{DEAD_LETTER_PREFIX}.>"], 30 * 86400),
)


async def ensure_streams(js: JetStreamContext) -> None:
    """Create or update Potluck's streams; safe to call from every service at start."""
    for spec in STREAMS:
        config = StreamConfig(
            name=spec.name,
            subjects=spec.subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=spec.max_age_s,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
