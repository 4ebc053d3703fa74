-- Read model "trial_balance": the balance of the system accounts @sales, @promotions,
-- @consumption, @refunds, @corrections and of all users' credits together
-- (users:available, users:held), from the postings of every credit-moving event. The
-- sum over all rows is zero. Integer cents; `{g}` is the generation suffix.
CREATE TABLE trial_balance{g} (
    account       TEXT PRIMARY KEY,
    balance_cents BIGINT NOT NULL
);
