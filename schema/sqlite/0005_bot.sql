-- The Telegram bot's own small state beside the ledger: the language each user chose
-- (English or Russian), and the notifications already sent, so a notifier that
-- restarts or is handed the same event again never sends a message twice.
CREATE TABLE bot_users (
    user_id    INTEGER PRIMARY KEY,
    language   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE bot_notifications (
    key     TEXT PRIMARY KEY, -- what the message is about: an event id, or expiring:<user>:<period end>
    user_id INTEGER NOT NULL,
    sent_at INTEGER NOT NULL
) STRICT;
