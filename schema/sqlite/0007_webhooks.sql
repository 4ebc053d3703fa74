-- Events out: the operator's webhook endpoints and the log of every delivery attempt.
-- Each endpoint keeps its own cursor in the event log (the last position done), so
-- one receiver that is down holds back no other; a lease names the process that
-- delivers to it now. Times are microseconds since the Unix epoch.
CREATE TABLE webhook_endpoints (
    endpoint_id     TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    event_types     TEXT NOT NULL, -- comma-separated patterns: payment.succeeded, credits.*, *
    secret          TEXT NOT NULL, -- whsec_<base64>: shown once, signs every delivery
    enabled         INTEGER NOT NULL,
    disabled_reason TEXT NOT NULL DEFAULT '',
    disabled_at     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    cursor          INTEGER NOT NULL, -- the last log position delivered or skipped
    attempts        INTEGER NOT NULL DEFAULT 0, -- failed attempts of the next event
    failing_since   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    replay_from     INTEGER NOT NULL DEFAULT 0, -- a replay asked for: positions from..to
    replay_to       INTEGER NOT NULL DEFAULT 0,
    replay_cursor   INTEGER NOT NULL DEFAULT 0, -- 0: no replay
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE webhook_deliveries (
    delivery_id  INTEGER PRIMARY KEY,
    endpoint_id  TEXT NOT NULL,
    position     INTEGER NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status_code  INTEGER NOT NULL, -- 0: no answer
    error        TEXT NOT NULL,    -- empty when delivered
    latency_ms   INTEGER NOT NULL,
    attempted_at INTEGER NOT NULL,
    replay       INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, delivery_id);
