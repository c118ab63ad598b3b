-- Followers wake on NOTIFY: one per INSERT statement, sent at commit, from a
-- trigger so that appends need no statement (or per-row call) of their own.
-- The payload is empty; followers read the log after their last position.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('potluck_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
