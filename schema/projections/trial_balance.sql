-- Read model "trial_balance": the balance of every ledger account (users' available and
-- held credits, and the system accounts @sales, @promotions, @consumption, @refunds,
-- @corrections), from the postings of every credit-moving event. The sum over all
-- rows is zero. Integer cents; `{g}` is the generation suffix.
CREATE TABLE trial_balance{g} (
    account       TEXT PRIMARY KEY,
    balance_cents BIGINT NOT NULL
);
