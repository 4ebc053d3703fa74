-- The event log on PostgreSQL.
--
-- Gap safety (see crates/tally-store/src/postgres.rs for the full argument):
-- every append reserves its positions and its transaction id together, under a
-- short advisory lock, so position order agrees with transaction-id order. Readers
-- only return events whose transaction id is below the oldest transaction still
-- running (pg_snapshot_xmin of their snapshot); with both rules a reader that follows
-- positions can never skip an event whose transaction commits late.

CREATE SEQUENCE events_position_seq AS BIGINT MINVALUE 1 CACHE 1;

CREATE TABLE events (
    position        BIGINT      NOT NULL,
    transaction_id  XID8        NOT NULL,
    event_id        UUID        NOT NULL,
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    -- json, not jsonb: the exact text is kept, and the hash chain covers that text.
    payload         JSON        NOT NULL,
    metadata        JSON        NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    hash            BYTEA       NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Reserves n positions for the calling transaction and gives it its transaction id
-- in the same critical section. The lock is session-level and released before the
-- function returns: it is held for microseconds, not until commit, so commits still
-- group-flush. Callers release all advisory locks if the call fails half-way.
CREATE FUNCTION tally_reserve_positions(n INTEGER) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    positions BIGINT[];
BEGIN
    PERFORM pg_advisory_lock(7317238442);
    PERFORM pg_current_xact_id();
    positions := ARRAY(SELECT nextval('events_position_seq') AS p
                       FROM generate_series(1, n) ORDER BY p);
    PERFORM pg_advisory_unlock(7317238442);
    RETURN positions;
END
$$;

-- The log is append-only: a mistake is corrected by a new event, never by an edit.
CREATE FUNCTION tally_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: correct a mistake with a new event';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tally_events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tally_events_append_only();

-- A cache of folded stream state; never the truth, always safe to delete.
CREATE TABLE snapshots (
    stream_id       TEXT        PRIMARY KEY,
    stream_version  BIGINT      NOT NULL,
    state           BYTEA       NOT NULL,
    taken_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
