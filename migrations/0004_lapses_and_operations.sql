-- A license that fell out of the listed window unrenewed and, re-read, still expires before
-- it: lapsed. Set once (with the alert), cleared when the license is listed again.
ALTER TABLE licenses ADD COLUMN lapsed_since TEXT;

-- Orders and edits, journaled like renewals: the row is committed in state 'sending' before
-- the request leaves and settled afterwards, so a timed-out order is never bought twice by a
-- retry (the retry first looks for the license the first one may have created).
CREATE TABLE operations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('order', 'edit')),
    elid         INTEGER,                 -- edit: the license; order: the new one, once known
    product      INTEGER,                 -- order: product (price / pricelist) id
    period       INTEGER,                 -- order: period id (4) or months (5/6)
    licname      TEXT,
    ip           TEXT,
    state        TEXT    NOT NULL CHECK (state IN
                    ('sending', 'ok', 'error', 'unknown', 'reconciled_ok', 'reconciled_failed')),
    created_at   TEXT    NOT NULL,
    finished_at  TEXT,
    error_class  TEXT,
    error_type   TEXT,
    error_object TEXT,
    error_msg    TEXT
);
CREATE INDEX operations_created ON operations(created_at);
-- At most one order of one product, name and IP whose outcome is open.
CREATE UNIQUE INDEX operations_one_open_order ON operations(product, licname, ip)
    WHERE kind = 'order' AND state IN ('sending', 'unknown');
