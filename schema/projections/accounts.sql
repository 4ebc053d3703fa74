-- Read model "accounts": balances, statements and holds, built from account streams.
-- `{g}` is the generation suffix (e.g. `__g2`); the runtime creates views named after
-- the tables without it. Amounts are integer cents (credits have at most 2 decimal
-- places), so sums are exact on SQLite and Postgres alike; times are microseconds
-- since the Unix epoch.
CREATE TABLE balances{g} (
    user_id         BIGINT PRIMARY KEY,
    available_cents BIGINT NOT NULL,
    held_cents      BIGINT NOT NULL,
    status          TEXT NOT NULL,
    username        TEXT NOT NULL, -- empty when Telegram gave none
    opened_at       BIGINT NOT NULL,
    position        BIGINT NOT NULL
);
CREATE TABLE statement{g} (
    user_id             BIGINT NOT NULL,
    position            BIGINT NOT NULL,
    kind                TEXT NOT NULL,
    amount_cents        BIGINT NOT NULL,
    balance_after_cents BIGINT NOT NULL,
    held_after_cents    BIGINT NOT NULL,
    reference           TEXT NOT NULL,
    actor               TEXT NOT NULL,
    occurred_at         BIGINT NOT NULL,
    PRIMARY KEY (user_id, position)
);
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
CREATE INDEX holds{g}_open ON holds{g} (state, expires_at);
CREATE INDEX holds{g}_id ON holds{g} (hold_id);
