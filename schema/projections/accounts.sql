-- Read model "accounts": balances and statements, built from account streams.
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
    occurred_at         BIGINT NOT NULL
);
-- The key as an index of its own: a rebuild fills the table first and builds it after.
CREATE UNIQUE INDEX statement{g}_key ON statement{g} (user_id, position);
