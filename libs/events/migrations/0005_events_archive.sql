-- Old events moved out of the hot table by `potluck ops archive` (libs/events/archive.py).
-- Same columns and the same uniqueness as `events`: an event lives in exactly one of the two
-- tables, moved in one transaction. No sequence, no NOTIFY trigger: nothing appends here but
-- the archiver, and followers are not woken by a move (the events were all seen before).
-- The archiver keeps every stream's latest event in `events`, so that the append's version
-- check (max(version) of the stream in `events`, under the table lock) and the unique
-- (stream, version) of `events` still cover every stream: no append can reuse an archived
-- version. A plain table rather than partitions: a partitioned `events` could not keep the
-- unique (stream, version) and event_id across partitions (Postgres requires the
-- partition key in every unique constraint).
CREATE TABLE events_archive (
    position        bigint      PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream          text        NOT NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    type            text        NOT NULL,
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_archive_stream_version_key UNIQUE (stream, version)
);

CREATE INDEX events_archive_type_idx ON events_archive (type, position);

-- The whole log, archived and hot, for readers and for operators at psql. UNION ALL of two
-- tables with a primary key on position: `ORDER BY position LIMIT n` is a merge of two index
-- scans, and a reader past the archive finds nothing there at the first probe.
CREATE VIEW all_events AS
    SELECT position, event_id, stream, version, type, schema_version, data, metadata, recorded_at
    FROM events_archive
    UNION ALL
    SELECT position, event_id, stream, version, type, schema_version, data, metadata, recorded_at
    FROM events;
