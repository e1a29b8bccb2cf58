-- The alert outbox: an alert is written here in the cycle that raises it and delivered by a
-- separate task with retries, so a receiver outage loses nothing and never delays a renewal.
-- `key` makes each alert unique per destination: raised twice, sent once.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL UNIQUE,
    sink            TEXT    NOT NULL CHECK (sink IN ('webhook', 'command')),
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,      -- the JSON document delivered
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT
);
CREATE INDEX alerts_pending ON alerts(next_attempt_at) WHERE delivered_at IS NULL;
