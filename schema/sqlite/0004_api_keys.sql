-- API keys: only a SHA-256 of each key is kept; the key itself is shown once.
CREATE TABLE api_keys (
    name       TEXT    PRIMARY KEY,
    role       TEXT    NOT NULL CHECK (role IN ('service', 'admin', 'auditor')),
    key_hash   TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
