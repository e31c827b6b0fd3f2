DROP FUNCTION aibank_capture(text, bigint, bigint, bigint, text, text, text, text, text, text, bigint, bigint, text, text, text, text, text, text, bigint, bigint, boolean);
DROP FUNCTION aibank_hold(text, bigint, text, text, bigint, bigint, text, bigint, bigint, bigint, bigint, bigint, boolean);
DROP FUNCTION aibank_used(text[], bigint);
DROP FUNCTION aibank_bucket(bigint);
