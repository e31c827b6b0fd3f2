-- What each account spent (charges and captures) per hour, kept in the transaction of each
-- spend. Spending windows sum whole hours from here and read the journal only for the
-- hour their start falls in, so a limit check costs the same after a million calls as
-- after ten.
CREATE TABLE spend_buckets (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    -- Epoch ms, a multiple of 3 600 000.
    bucket_start BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL,
    PRIMARY KEY (account_id, bucket_start)
);
INSERT INTO spend_buckets (account_id, bucket_start, amount_micros)
SELECT account_id, (created_at / 3600000) * 3600000, SUM(-delta_micros)
FROM journal_entries
WHERE kind IN ('charge', 'capture')
GROUP BY account_id, (created_at / 3600000) * 3600000;
