-- Events out: the operator's webhook endpoints and the log of every delivery attempt.
-- Each endpoint keeps its own cursor in the event log (the last position done), so
-- one receiver that is down holds back no other; a lease names the process that
-- delivers to it now. Times are microseconds since the Unix epoch.
CREATE TABLE webhook_endpoints (
    endpoint_id     TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    event_types     TEXT NOT NULL, -- comma-separated patterns: payment.succeeded, credits.*, *
    secret          TEXT NOT NULL, -- whsec_<base64>: shown once, signs every delivery
    enabled         BIGINT NOT NULL,
    disabled_reason TEXT NOT NULL DEFAULT '',
    disabled_at     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    cursor          BIGINT NOT NULL, -- the last log position delivered or skipped
    attempts        BIGINT NOT NULL DEFAULT 0, -- failed attempts of the next event
    failing_since   BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    replay_from     BIGINT NOT NULL DEFAULT 0, -- a replay asked for: positions from..to
    replay_to       BIGINT NOT NULL DEFAULT 0,
    replay_cursor   BIGINT NOT NULL DEFAULT 0, -- 0: no replay
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE webhook_deliveries (
    delivery_id  BIGSERIAL PRIMARY KEY,
    endpoint_id  TEXT NOT NULL,
    position     BIGINT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    status_code  BIGINT NOT NULL, -- 0: no answer
    error        TEXT NOT NULL,    -- empty when delivered
    latency_ms   BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL,
    replay       BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, delivery_id);
