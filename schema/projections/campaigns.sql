-- Read model "campaigns": the operator's campaigns, the rotation of their posts and
-- what each post earned: successful posts, clicks (callback buttons and /start deep
-- links), and the payments of users who clicked (attributed to the user's last click
-- within the attribution window when read, so the window can change). Times are
-- microseconds since the Unix epoch; money in cents; `{g}` is the generation suffix.
CREATE TABLE campaigns{g} (
    campaign_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    posts       BIGINT NOT NULL -- posts in the rotation
);
CREATE TABLE campaign_posts{g} (
    campaign_id TEXT NOT NULL,
    post_id     TEXT NOT NULL,
    k           BIGINT NOT NULL, -- place in the rotation; -1 once dropped from it
    slot_id     TEXT NOT NULL,
    posted      BIGINT NOT NULL, -- successful posts
    PRIMARY KEY (campaign_id, post_id)
);
CREATE INDEX campaign_posts{g}_slot ON campaign_posts{g} (slot_id);
CREATE TABLE campaign_clicks{g} (
    position    BIGINT PRIMARY KEY, -- the click's event
    campaign_id TEXT NOT NULL,
    post_id     TEXT NOT NULL,
    user_id     BIGINT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX campaign_clicks{g}_user ON campaign_clicks{g} (user_id, at);
CREATE TABLE campaign_payment_terms{g} (
    payment_id   TEXT PRIMARY KEY,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL
);
CREATE TABLE campaign_payments{g} (
    payment_id   TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL
);
CREATE INDEX campaign_payments{g}_user ON campaign_payments{g} (user_id);
