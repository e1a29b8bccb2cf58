-- BILLmanager 5/6 details of a license: the tariff's display name in the list (with `product`
-- it remembers the tariff id the license's form gave, so the form is read once, not every
-- cycle), a status change in progress (`special_status`: never paid while set), and the cost
-- of one period as the billing shows it (hundredths and a currency code).
ALTER TABLE licenses ADD COLUMN pricelist_label TEXT;
ALTER TABLE licenses ADD COLUMN special TEXT;
ALTER TABLE licenses ADD COLUMN cost_cents INTEGER;
ALTER TABLE licenses ADD COLUMN cost_currency TEXT;
-- What each renewal cost (or would have), where the billing showed it.
ALTER TABLE renewals ADD COLUMN cost_cents INTEGER;
ALTER TABLE renewals ADD COLUMN cost_currency TEXT;
-- Small facts about the account licrenew learned: the API generation detected, the balance.
CREATE TABLE meta (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
