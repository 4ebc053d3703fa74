-- Read model "payments": every payment with its terms and where it is. Integer cents;
-- times are microseconds since the Unix epoch; `{g}` is the generation suffix.
CREATE TABLE payments{g} (
    payment_id          TEXT PRIMARY KEY,
    user_id             BIGINT NOT NULL,
    provider            TEXT NOT NULL,
    amount_cents        BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    purpose             TEXT NOT NULL, -- 'credits' or 'plan'
    credits_cents       BIGINT NOT NULL, -- credits bought; 0 for a plan
    plan                TEXT NOT NULL, -- plan bought; empty for credits
    status              TEXT NOT NULL, -- pending, succeeded, failed, reversed
    provider_payment_id TEXT NOT NULL, -- empty until it succeeded
    reason              TEXT NOT NULL, -- why it failed or was reversed; else empty
    pay_url             TEXT NOT NULL DEFAULT '', -- the provider's pay page, once invoiced
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    position            BIGINT NOT NULL
);
CREATE INDEX payments{g}_user ON payments{g} (user_id, created_at);
-- Charges a provider made for a payment already paid (or failed): money received that
-- bought nothing, for an admin to give back.
CREATE TABLE duplicate_charges{g} (
    provider            TEXT NOT NULL,
    provider_payment_id TEXT NOT NULL,
    payment_id          TEXT NOT NULL,
    user_id             BIGINT NOT NULL,
    amount_cents        BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    occurred_at         BIGINT NOT NULL,
    position            BIGINT NOT NULL,
    PRIMARY KEY (provider, provider_payment_id)
);
CREATE INDEX duplicate_charges{g}_user ON duplicate_charges{g} (user_id, position);
