-- Read model "posts": ad slots, their destinations, and post analytics per slot and
-- destination (attempts, successes, failures, failures by error kind, last error),
-- and which destinations each cycle already reached (`slot_posts`).
-- Success rate = successes / attempts. `topic_id` 0 means no forum topic. Times are
-- microseconds since the Unix epoch; `{g}` is the generation suffix.
CREATE TABLE slots{g} (
    slot_id       TEXT PRIMARY KEY,
    user_id       BIGINT NOT NULL,
    content       TEXT NOT NULL,
    destinations  BIGINT NOT NULL,
    configured_at BIGINT NOT NULL,
    position      BIGINT NOT NULL,
    status        TEXT NOT NULL -- active, paused, removed (only active slots post
                                -- and count against the owner's plan)
);
CREATE INDEX slots{g}_user ON slots{g} (user_id);
CREATE TABLE slot_destinations{g} (
    slot_id  TEXT NOT NULL,
    chat_id  BIGINT NOT NULL,
    topic_id BIGINT NOT NULL,
    PRIMARY KEY (slot_id, chat_id, topic_id)
);
CREATE TABLE post_stats{g} (
    slot_id         TEXT NOT NULL,
    chat_id         BIGINT NOT NULL,
    topic_id        BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    successes       BIGINT NOT NULL,
    failures        BIGINT NOT NULL,
    last_error      TEXT NOT NULL, -- error kind of the last failure; empty if none
    last_error_at   BIGINT NOT NULL, -- 0 if none
    last_attempt_at BIGINT NOT NULL,
    PRIMARY KEY (slot_id, chat_id, topic_id)
);
CREATE INDEX post_stats{g}_destination ON post_stats{g} (chat_id, topic_id);
CREATE TABLE post_failures{g} (
    slot_id    TEXT NOT NULL,
    chat_id    BIGINT NOT NULL,
    topic_id   BIGINT NOT NULL,
    error_kind TEXT NOT NULL,
    failures   BIGINT NOT NULL,
    PRIMARY KEY (slot_id, chat_id, topic_id, error_kind)
);
CREATE TABLE slot_posts{g} (
    slot_id  TEXT NOT NULL,
    cycle    BIGINT NOT NULL,
    chat_id  BIGINT NOT NULL,
    topic_id BIGINT NOT NULL,
    posted_at BIGINT NOT NULL,
    PRIMARY KEY (slot_id, cycle, chat_id, topic_id)
);
