-- A service's whole fold at one log position: where a restart resumes instead of position 0
-- (potluck.events.checkpoints; its sqlmodel CheckpointRow must agree, a unit test checks).
-- `fold` names the fold and its own version, `schema` hashes the source of the modules listed
-- in `modules`; a row of other code is never read. State and position are one row, written
-- in one statement, so they always agree. Pickles barely compress: stored without TOAST's.
CREATE TABLE checkpoints (
    reader text NOT NULL,
    fold text NOT NULL,
    schema text NOT NULL,
    modules text NOT NULL,
    position bigint NOT NULL,
    state bytea NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reader, fold, schema)
);
ALTER TABLE checkpoints ALTER COLUMN state SET STORAGE EXTERNAL;
