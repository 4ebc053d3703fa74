-- The projections' registry: one row per read model. The runtime advances `checkpoint`
-- in the same transaction as the read model's rows (compare-and-set on the old value),
-- so every event takes effect exactly once. `generation` names the physical tables
-- (`<table>__g<generation>`) the views `<table>` currently show; a rebuild fills the
-- next generation aside and swaps views and this row in one transaction.
CREATE TABLE projections (
    name           TEXT PRIMARY KEY,
    version        BIGINT NOT NULL,
    generation     BIGINT NOT NULL,
    checkpoint     BIGINT NOT NULL,
    -- recorded_at (microseconds since the epoch) of the checkpoint's event.
    checkpoint_at  BIGINT NOT NULL DEFAULT 0,
    -- when the row last changed (microseconds since the epoch).
    updated_at     BIGINT NOT NULL DEFAULT 0
);
