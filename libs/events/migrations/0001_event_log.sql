-- The event log: the one source of truth.
CREATE TABLE events (
    position        bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream          text        NOT NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    type            text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);

CREATE INDEX events_type_idx ON events (type, position);
CREATE INDEX events_recorded_at_idx ON events (recorded_at);

-- What each relay has published, written on the leader's own connection.
CREATE TABLE relay_checkpoints (
    name        text PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Consumers with database access record what they applied in the same
-- transaction as its effects (exactly-once processing).
CREATE TABLE consumer_positions (
    consumer    text PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
