-- The hold's function does less while it holds the agent's account row.
--
-- aibank_used read each window's edge with `kind IN ('charge', 'capture')`. On the index
-- (account_id, kind, created_at) a list on its second column may be planned as a filter
-- (PostgreSQL then scans every journal row of the account for a range that holds an hour
-- of them), and a function's plans are cached per connection: a plan made while the
-- table was small, its statistics not yet gathered, kept scanning all of a busy agent's
-- journal inside its account lock. One kind per lookup is an equality on that column,
-- always a bound of the index scan, whatever the statistics.

CREATE OR REPLACE FUNCTION aibank_used(
    p_ids text[], p_now bigint,
    OUT d bigint, OUT w bigint, OUT m bigint, OUT held bigint)
LANGUAGE plpgsql AS $$
DECLARE
    s_d bigint := p_now - 86400000;
    s_w bigint := p_now - 604800000;
    s_m bigint := p_now - 2592000000;
    f_d bigint := aibank_bucket(p_now - 86400000);
    f_w bigint := aibank_bucket(p_now - 604800000);
    f_m bigint := aibank_bucket(p_now - 2592000000);
    e_d bigint;
    e_w bigint;
    e_m bigint;
    t_d bigint;
    t_w bigint;
    t_m bigint;
BEGIN
    SELECT COALESCE(SUM(CASE WHEN bucket_start > f_d THEN amount_micros ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN bucket_start > f_w THEN amount_micros ELSE 0 END), 0),
           COALESCE(SUM(amount_micros), 0)
      INTO d, w, m
      FROM spend_buckets WHERE account_id = ANY (p_ids) AND bucket_start > f_m;
    -- Each window's edge bucket: the journal rows of it that are inside the window.
    SELECT (SELECT COALESCE(SUM(delta_micros), 0) FROM journal_entries
             WHERE account_id = ANY (p_ids) AND kind = 'charge'
               AND created_at > s_d AND created_at < f_d + 3600000)
         + (SELECT COALESCE(SUM(delta_micros), 0) FROM journal_entries
             WHERE account_id = ANY (p_ids) AND kind = 'capture'
               AND created_at > s_d AND created_at < f_d + 3600000)
      INTO e_d;
    SELECT (SELECT COALESCE(SUM(delta_micros), 0) FROM journal_entries
             WHERE account_id = ANY (p_ids) AND kind = 'charge'
               AND created_at > s_w AND created_at < f_w + 3600000)
         + (SELECT COALESCE(SUM(delta_micros), 0) FROM journal_entries
             WHERE account_id = ANY (p_ids) AND kind = 'capture'
               AND created_at > s_w AND created_at < f_w + 3600000)
      INTO e_w;
    SELECT (SELECT COALESCE(SUM(delta_micros), 0) FROM journal_entries
             WHERE account_id = ANY (p_ids) AND kind = 'charge'
               AND created_at > s_m AND created_at < f_m + 3600000)
         + (SELECT COALESCE(SUM(delta_micros), 0) FROM journal_entries
             WHERE account_id = ANY (p_ids) AND kind = 'capture'
               AND created_at > s_m AND created_at < f_m + 3600000)
      INTO e_m;
    SELECT COALESCE(SUM(CASE WHEN created_at > s_d THEN usd_micros ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN created_at > s_w THEN usd_micros ELSE 0 END), 0),
           COALESCE(SUM(usd_micros), 0)
      INTO t_d, t_w, t_m
      FROM wallet_transfers
     WHERE agent_id = ANY (p_ids) AND status <> 'failed' AND created_at > s_m;
    SELECT COALESCE(SUM(held_micros), 0) INTO held FROM accounts WHERE id = ANY (p_ids);
    -- Spending rows are negative in the journal.
    d := d - e_d + t_d;
    w := w - e_w + t_w;
    m := m - e_m + t_m;
END $$;

-- The hold takes its locks without writing a row version: the platform and the account
-- with FOR NO KEY UPDATE, the lock the Rust step's no-op UPDATE takes on PostgreSQL; and
-- the key's two counters are one UPDATE.
CREATE OR REPLACE FUNCTION aibank_hold(
    p_account text, p_amount bigint, p_hold text, p_reference text, p_now bigint,
    p_expires bigint, p_key text, p_daily bigint, p_msg_window bigint, p_rpm bigint,
    p_tpm bigint, p_tokens bigint, p_unsynced boolean)
RETURNS TABLE (balance bigint, minute_start bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_agent boolean;
    v_platform text;
    v_per_tx bigint;
    v_daily bigint;
    v_weekly bigint;
    v_monthly bigint;
    v_fleet bigint;
    v_balance bigint;
    v_owed bigint;
    u record;
    k record;
    v_msg_expired bigint := p_now - p_msg_window;
    v_min_expired bigint := p_now - 60000;
    v_tokens bigint := CASE WHEN p_tpm IS NULL THEN 0 ELSE GREATEST(p_tokens, 0) END;
    v_minute boolean := p_rpm IS NOT NULL OR p_tpm IS NOT NULL;
    v_min_start bigint;
BEGIN
    IF p_amount <= 0 THEN
        RETURN;
    END IF;
    SELECT a.platform_id, a.per_tx_limit_micros, a.daily_limit_micros,
           a.weekly_limit_micros, a.monthly_limit_micros, p.daily_limit_micros
      INTO v_platform, v_per_tx, v_daily, v_weekly, v_monthly, v_fleet
      FROM agents a LEFT JOIN platforms p ON p.id = a.platform_id
     WHERE a.id = p_account;
    v_agent := FOUND;
    -- Locks in the Rust step's order: the platform (when its fleet limit applies), the
    -- account, the key.
    IF v_agent AND v_platform IS NOT NULL AND v_fleet IS NOT NULL THEN
        PERFORM 1 FROM platforms WHERE id = v_platform FOR NO KEY UPDATE;
    END IF;
    SELECT balance_micros, owed_micros INTO v_balance, v_owed
      FROM accounts WHERE id = p_account FOR NO KEY UPDATE;
    IF NOT FOUND OR v_owed > 0 OR v_balance < p_amount THEN
        RETURN;
    END IF;
    IF v_agent THEN
        IF p_amount > v_per_tx THEN
            RETURN;
        END IF;
        SELECT * INTO u FROM aibank_used(ARRAY[p_account], p_now);
        IF u.d + u.held + p_amount > v_daily OR u.w + u.held + p_amount > v_weekly
           OR u.m + u.held + p_amount > v_monthly THEN
            RETURN;
        END IF;
        IF v_platform IS NOT NULL AND v_fleet IS NOT NULL THEN
            SELECT * INTO u
              FROM aibank_used(ARRAY(SELECT id FROM agents WHERE platform_id = v_platform), p_now);
            IF u.d + u.held + p_amount > v_fleet THEN
                RETURN;
            END IF;
        END IF;
    END IF;
    IF p_key IS NOT NULL AND (p_daily IS NOT NULL OR v_minute) THEN
        SELECT msg_window_start, msg_count, minute_window_start, minute_requests, minute_tokens
          INTO k FROM api_keys WHERE id = p_key FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF p_daily IS NOT NULL
           AND NOT (k.msg_window_start <= v_msg_expired OR k.msg_count < p_daily) THEN
            RETURN;
        END IF;
        IF v_minute AND NOT (k.minute_window_start <= v_min_expired
            OR (k.minute_requests < COALESCE(p_rpm, 9223372036854775807)
                AND (k.minute_tokens = 0
                     OR k.minute_tokens <= COALESCE(p_tpm - v_tokens, 9223372036854775807)))) THEN
            RETURN;
        END IF;
    END IF;
    -- Everything allows it: the writes.
    UPDATE accounts SET balance_micros = balance_micros - p_amount,
           held_micros = held_micros + p_amount, updated_at = p_now
     WHERE id = p_account
    RETURNING balance_micros INTO v_balance;
    INSERT INTO journal_entries
        (account_id, delta_micros, balance_after_micros, kind, reference, created_at)
        VALUES (p_account, -p_amount, v_balance, 'hold', p_hold, p_now);
    INSERT INTO holds (id, account_id, amount_micros, captured_micros, status, reference,
                       created_at, expires_at, settled_at)
        VALUES (p_hold, p_account, p_amount, NULL, 'open', p_reference, p_now, p_expires, NULL);
    IF p_key IS NOT NULL AND (p_daily IS NOT NULL OR v_minute) THEN
        UPDATE api_keys SET
            msg_count = CASE WHEN p_daily IS NULL THEN msg_count
                WHEN msg_window_start <= v_msg_expired THEN 1 ELSE msg_count + 1 END,
            msg_window_start = CASE WHEN p_daily IS NOT NULL AND msg_window_start <= v_msg_expired
                THEN p_now ELSE msg_window_start END,
            minute_requests = CASE WHEN NOT v_minute THEN minute_requests
                WHEN minute_window_start <= v_min_expired THEN 1 ELSE minute_requests + 1 END,
            minute_tokens = CASE WHEN NOT v_minute THEN minute_tokens
                WHEN minute_window_start <= v_min_expired THEN v_tokens
                ELSE minute_tokens + v_tokens END,
            minute_window_start = CASE WHEN v_minute AND minute_window_start <= v_min_expired
                THEN p_now ELSE minute_window_start END
         WHERE id = p_key
        RETURNING CASE WHEN v_minute THEN minute_window_start END INTO v_min_start;
    END IF;
    IF p_unsynced THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    balance := v_balance;
    minute_start := v_min_start;
    RETURN NEXT;
END $$;
