-- Read model "subscriptions": each user's plan, slots and paid period, and every admin
-- correction of it (before and after, who, why). Times are microseconds since the Unix
-- epoch; `{g}` is the generation suffix.
CREATE TABLE subscriptions{g} (
    user_id     BIGINT PRIMARY KEY,
    plan        TEXT NOT NULL,
    slots       BIGINT NOT NULL,
    status      TEXT NOT NULL, -- active, cancelled, expired
    period_end  BIGINT NOT NULL,
    started_at  BIGINT NOT NULL, -- start of the current run of periods
    payments    BIGINT NOT NULL, -- periods paid, ever
    corrections BIGINT NOT NULL, -- admin corrections, ever
    updated_at  BIGINT NOT NULL,
    position    BIGINT NOT NULL
);
CREATE INDEX subscriptions{g}_due ON subscriptions{g} (status, period_end);
CREATE TABLE subscription_corrections{g} (
    user_id      BIGINT NOT NULL,
    position     BIGINT NOT NULL,
    plan_before  TEXT NOT NULL, -- empty when there was none
    slots_before BIGINT NOT NULL,
    plan_after   TEXT NOT NULL,
    slots_after  BIGINT NOT NULL,
    admin        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, position)
);
