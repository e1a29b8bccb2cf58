-- A hash of the fields a listing shows, so a sync writes only the rows that changed; NULL for
-- rows written before it existed (they are rewritten once).
ALTER TABLE licenses ADD COLUMN fields_hash INTEGER;
