-- Read model "refunds": every refund request and its decision; the queue is the rows
-- with status 'requested'. Integer cents; times are microseconds since the Unix epoch;
-- `{g}` is the generation suffix.
CREATE TABLE refunds{g} (
    refund_id       TEXT PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    reference       TEXT NOT NULL, -- the spend: debit:<id> or hold:<id>
    amount_cents    BIGINT NOT NULL,
    reason          TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    status          TEXT NOT NULL, -- requested, approved, rejected
    decided_by      TEXT NOT NULL, -- empty until decided
    decision_reason TEXT NOT NULL,
    requested_at    BIGINT NOT NULL,
    decided_at      BIGINT NOT NULL, -- 0 until decided
    position        BIGINT NOT NULL
);
CREATE INDEX refunds{g}_queue ON refunds{g} (status, requested_at);
CREATE INDEX refunds{g}_user ON refunds{g} (user_id);
