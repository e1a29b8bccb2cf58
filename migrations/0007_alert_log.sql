-- Alerts reworked (issue 13): every alert ever raised is remembered by its stable id in
-- alert_log (raised twice, recorded once), with the subject it is about (`license:1009`,
-- `login`, `balance`…) while its problem is open, so a second alert for the same cause is
-- suppressed and a `resolved` alert follows when the problem clears.
CREATE TABLE alert_log (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT,
    payload     TEXT NOT NULL,      -- the alert's JSON document
    raised_at   TEXT NOT NULL,
    resolved_at TEXT
);
CREATE INDEX alert_log_open ON alert_log(subject) WHERE subject IS NOT NULL AND resolved_at IS NULL;

-- Alerts queued before this migration keep their ids: never raised again.
INSERT OR IGNORE INTO alert_log (id, kind, subject, payload, raised_at)
SELECT CASE WHEN instr(key, '|') > 0 THEN substr(key, 1, instr(key, '|') - 1) ELSE key END,
       event, NULL, payload, created_at
FROM alerts;

-- The outbox gains email, the severity and the id of what it delivers (a digest or one alert).
CREATE TABLE alerts_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL UNIQUE,
    sink            TEXT    NOT NULL CHECK (sink IN ('webhook', 'command', 'email')),
    event           TEXT    NOT NULL,      -- the kind: `digest` or an alert kind
    severity        TEXT    NOT NULL DEFAULT 'warning' CHECK (severity IN ('critical', 'warning', 'info')),
    alert_id        TEXT    NOT NULL DEFAULT '',
    payload         TEXT    NOT NULL,      -- the JSON document delivered
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT
);
INSERT INTO alerts_new (id, key, sink, event, alert_id, payload, created_at, attempts, next_attempt_at, delivered_at, last_error)
SELECT id, key, sink, event,
       CASE WHEN instr(key, '|') > 0 THEN substr(key, 1, instr(key, '|') - 1) ELSE key END,
       payload, created_at, attempts, next_attempt_at, delivered_at, last_error
FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
CREATE INDEX alerts_pending ON alerts(next_attempt_at) WHERE delivered_at IS NULL;
