-- licrenew state: licenses as last seen, the renewal journal, and cycles.
-- Dates are ISO-8601 text: YYYY-MM-DD for expiries, RFC 3339 UTC for instants.

CREATE TABLE licenses (
    elid        INTEGER PRIMARY KEY,
    licname     TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    product     INTEGER NOT NULL,
    period      INTEGER,
    expiry      TEXT    NOT NULL,
    status      INTEGER NOT NULL,          -- 1 ordered … 5 processing, 0 unknown
    status_raw  TEXT    NOT NULL,
    first_seen  TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    gone_since  TEXT,                      -- no longer listed by the API
    last_outcome TEXT,                     -- last renewal decision: ok, error, skipped, …
    last_reason  TEXT,
    last_decided TEXT
);
CREATE INDEX licenses_expiry ON licenses(expiry);

CREATE TABLE cycles (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,          -- run, renew, dry_run, sync, prolong
    started_at  TEXT    NOT NULL,
    ended_at    TEXT,
    outcome     TEXT,                      -- ok, failed, auth_failed, interrupted
    error       TEXT,
    listed      INTEGER NOT NULL DEFAULT 0,
    renewed     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    unknown     INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    reconciled  INTEGER NOT NULL DEFAULT 0
);

-- One row per paid renewal attempt. The row is committed in state 'sending' before the
-- request leaves, and settled afterwards.
CREATE TABLE renewals (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    elid          INTEGER NOT NULL,
    licname       TEXT    NOT NULL,
    product       INTEGER NOT NULL,
    period        INTEGER NOT NULL,
    expiry_before TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN
                    ('sending', 'ok', 'error', 'unknown', 'reconciled_ok', 'reconciled_failed')),
    source        TEXT    NOT NULL,        -- policy or manual
    created_at    TEXT    NOT NULL,        -- committed just before the request is sent
    finished_at   TEXT,
    error_class   TEXT,                    -- api, timeout, transport, http, malformed, …
    error_type    TEXT,
    error_object  TEXT,
    error_msg     TEXT,
    new_expiry    TEXT,
    cycle_id      INTEGER REFERENCES cycles(id),
    policy_file   TEXT,
    policy_hash   TEXT
);
CREATE INDEX renewals_elid ON renewals(elid);
CREATE INDEX renewals_cycle ON renewals(cycle_id);
CREATE INDEX renewals_open ON renewals(state) WHERE state IN ('sending', 'unknown');

-- The money fence: at most one renewal that went out (or may have) per license and seen
-- expiry. Refusals ('error') and attempts proven not to have landed ('reconciled_failed')
-- do not count, so those may be tried again.
CREATE UNIQUE INDEX renewals_one_per_expiry ON renewals(elid, expiry_before)
    WHERE state IN ('sending', 'ok', 'unknown', 'reconciled_ok');
