-- What became of a notice: 'sent', or why it could not be delivered (the user blocked
-- the bot or never started it, Telegram refused the message, or it kept failing):
-- recorded either way, so one unreachable chat never holds the notifier back.
ALTER TABLE bot_notifications ADD COLUMN outcome TEXT NOT NULL DEFAULT 'sent';
