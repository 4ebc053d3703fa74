-- Reactions a reactor could not carry out because the rules refused them (a plan no
-- longer sold, say): kept for an admin, since retrying a refusal changes nothing.
CREATE TABLE reactor_problems (
    position    BIGINT NOT NULL,
    reactor     TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    code        TEXT   NOT NULL,
    detail      TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (reactor, position)
);
