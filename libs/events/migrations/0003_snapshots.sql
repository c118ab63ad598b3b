-- The latest snapshot of a long stream's fold: where a load starts instead of version 0.
-- `kind` names the fold and its shape (a changed fold writes under a new kind and ignores the
-- old rows); a snapshot is only ever replaced by one at a later version.
CREATE TABLE snapshots (
    stream text NOT NULL,
    kind text NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    state jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, kind)
);
