-- Read model "holds": every hold with its state (open, captured, released, expired)
-- and expiry; the hold reactor expires open holds past `expires_at`. Integer cents;
-- times are microseconds since the Unix epoch; `{g}` is the generation suffix.
CREATE TABLE holds{g} (
    user_id        BIGINT NOT NULL,
    hold_id        TEXT NOT NULL,
    amount_cents   BIGINT NOT NULL,
    captured_cents BIGINT NOT NULL,
    state          TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    position       BIGINT NOT NULL,
    PRIMARY KEY (user_id, hold_id)
);
CREATE INDEX holds{g}_open ON holds{g} (expires_at) WHERE state = 'open';
CREATE INDEX holds{g}_id ON holds{g} (hold_id);
