-- What an account owes: usage already served that neither its hold nor its balance
-- covered. An account that owes has no balance left (money coming in pays the debt
-- first) and cannot spend. Its journal sums to balance_micros - owed_micros.
ALTER TABLE accounts ADD COLUMN owed_micros BIGINT NOT NULL DEFAULT 0 CHECK (owed_micros >= 0);

-- The part of a call's cost it left owed, and the price table it was billed at.
ALTER TABLE usage_events ADD COLUMN owed_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN price_version TEXT;
