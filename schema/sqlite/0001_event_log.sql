-- The event log on SQLite: one table of events, one of snapshots.
-- Positions are assigned by Tally's single writer inside its write transaction, so
-- commit order equals position order and readers can never skip an event.
-- Times are microseconds since the Unix epoch (UTC), the precision both backends keep.

CREATE TABLE events (
    position        INTEGER PRIMARY KEY,
    event_id        BLOB    NOT NULL,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    occurred_at     INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
) STRICT;

-- The log is append-only: a mistake is corrected by a new event, never by an edit.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: correct a mistake with a new event');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: correct a mistake with a new event');
END;

-- A cache of folded stream state; never the truth, always safe to delete.
CREATE TABLE snapshots (
    stream_id       TEXT    PRIMARY KEY,
    stream_version  INTEGER NOT NULL,
    state           BLOB    NOT NULL,
    taken_at        INTEGER NOT NULL
) STRICT;
