-- Read model "daily_stats": one row per UTC day, metric and unit, e.g.
-- ('2026-11-21', 'revenue_cents', 'XTR') or ('2026-11-21', 'credits_spent_cents',
-- 'credits'). Integer counts and cents. `stats_payment_terms` keeps each payment's
-- price so its success can be counted as revenue. `{g}` is the generation suffix.
CREATE TABLE daily_stats{g} (
    day    TEXT NOT NULL,
    metric TEXT NOT NULL,
    unit   TEXT NOT NULL,
    value  BIGINT NOT NULL,
    PRIMARY KEY (day, metric, unit)
);
CREATE TABLE stats_payment_terms{g} (
    payment_id   TEXT PRIMARY KEY,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL
);
