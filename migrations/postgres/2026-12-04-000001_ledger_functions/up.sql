-- The gateway's two ledger steps, each one statement: placing a call's hold (with its
-- key's message and minute counters) and capturing it (with its usage row). One agent's
-- calls take turns on its account row; run from the client, a step held that lock for
-- a round trip per statement, and here it holds it only while the function runs, with
-- the commit (the function is the whole transaction) right after.
--
-- Each function is the Rust ledger's step statement for statement (aibank-ledger's
-- holds.rs, accounts.rs and limits.rs, aibank-store's repo::keys), and it only takes the
-- path where everything is allowed: when anything would refuse, it returns no row and
-- changes nothing, and the caller runs the Rust step, which says exactly why. Inside
-- PL/pgSQL every statement reads a new snapshot (READ COMMITTED), so what a function
-- reads after taking a lock is what every spend before it committed: the same
-- exactness as the Rust step.

-- The start of the hour an epoch-ms instant falls in (floor division, as div_euclid).
CREATE FUNCTION aibank_bucket(p_at bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT p_at - (((p_at % 3600000) + 3600000) % 3600000) $$;

-- What some accounts spent in the last day, week and month (charges and captures, by
-- their hourly buckets and the journal at each window's edge, plus wallet transfers
-- that did not fail) and what their open holds reserve: limits.rs's `used_by`.
CREATE FUNCTION aibank_used(
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
    SELECT COALESCE(SUM(delta_micros), 0) INTO e_d FROM journal_entries
     WHERE account_id = ANY (p_ids) AND kind IN ('charge', 'capture')
       AND created_at > s_d AND created_at < f_d + 3600000;
    SELECT COALESCE(SUM(delta_micros), 0) INTO e_w FROM journal_entries
     WHERE account_id = ANY (p_ids) AND kind IN ('charge', 'capture')
       AND created_at > s_w AND created_at < f_w + 3600000;
    SELECT COALESCE(SUM(delta_micros), 0) INTO e_m FROM journal_entries
     WHERE account_id = ANY (p_ids) AND kind IN ('charge', 'capture')
       AND created_at > s_m AND created_at < f_m + 3600000;
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

-- Places a hold of p_amount on p_account (holds.rs's `place_hold`) and, with p_key,
-- counts the call against that key's daily messages (p_daily in p_msg_window ms) and its
-- minute window (p_rpm requests, p_tpm tokens, the call counted at p_tokens):
-- billing.rs's `Quota::admit`. One row (the balance after, the minute window's start)
-- when placed; no row and no change when anything refuses. p_unsynced: the commit does
-- not wait for the log flush (the caller flushes when it must).
CREATE FUNCTION aibank_hold(
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
        UPDATE platforms SET id = id WHERE id = v_platform;
    END IF;
    UPDATE accounts SET updated_at = updated_at WHERE id = p_account
        RETURNING balance_micros, owed_micros INTO v_balance, v_owed;
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
    IF p_key IS NOT NULL AND p_daily IS NOT NULL THEN
        UPDATE api_keys SET
            msg_count = CASE WHEN msg_window_start <= v_msg_expired THEN 1 ELSE msg_count + 1 END,
            msg_window_start = CASE WHEN msg_window_start <= v_msg_expired
                THEN p_now ELSE msg_window_start END
         WHERE id = p_key;
    END IF;
    IF p_key IS NOT NULL AND v_minute THEN
        UPDATE api_keys SET
            minute_requests = CASE WHEN minute_window_start <= v_min_expired
                THEN 1 ELSE minute_requests + 1 END,
            minute_tokens = CASE WHEN minute_window_start <= v_min_expired
                THEN v_tokens ELSE minute_tokens + v_tokens END,
            minute_window_start = CASE WHEN minute_window_start <= v_min_expired
                THEN p_now ELSE minute_window_start END
         WHERE id = p_key
        RETURNING minute_window_start INTO v_min_start;
    END IF;
    IF p_unsynced THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    balance := v_balance;
    minute_start := v_min_start;
    RETURN NEXT;
END $$;

-- Captures an open hold for p_taken (holds.rs's `settle` with `Outcome::Served`: it may
-- exceed the hold, and what the balance cannot cover is owed), with the call's usage row
-- when p_usage is given (limits.rs's `record_usage`), its x402 payment's cost when
-- p_chain is, and its key's minute tokens put right by p_token_delta when p_key is
-- (billing.rs's `settle`). p_beyond: the part of p_taken beyond the hold that counts as
-- this call's debt. One row (balance, owed by this call) when captured; no row and no
-- change when the hold is not open (the Rust step settles that case).
CREATE FUNCTION aibank_capture(
    p_hold text, p_taken bigint, p_beyond bigint, p_now bigint,
    p_usage text, p_agent text, p_api_key text, p_provider text, p_deployment text,
    p_model text, p_input bigint, p_output bigint, p_request text, p_description text,
    p_price_version text, p_chain text, p_tx_hash text, p_key text, p_window_start bigint,
    p_token_delta bigint, p_unsynced boolean)
RETURNS TABLE (balance bigint, owed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_account text;
    v_amount bigint;
    v_delta bigint;
    v_balance bigint;
    v_owed bigint;
    v_net bigint;
BEGIN
    IF p_taken < 0 THEN
        RETURN;
    END IF;
    -- The hold's row first, then its account's, as every settlement takes them.
    UPDATE holds SET status = 'captured', captured_micros = p_taken, settled_at = p_now
     WHERE id = p_hold AND status = 'open'
    RETURNING account_id, amount_micros INTO v_account, v_amount;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_delta := v_amount - p_taken;
    UPDATE accounts SET
        balance_micros = CASE WHEN balance_micros - owed_micros + v_delta > 0
            THEN balance_micros - owed_micros + v_delta ELSE 0 END,
        owed_micros = CASE WHEN balance_micros - owed_micros + v_delta < 0
            THEN owed_micros - balance_micros - v_delta ELSE 0 END,
        held_micros = held_micros - v_amount,
        total_spent_micros = total_spent_micros + p_taken,
        updated_at = p_now
     WHERE id = v_account
    RETURNING balance_micros, owed_micros INTO v_balance, v_owed;
    v_net := v_balance - v_owed;
    IF p_taken > 0 THEN
        INSERT INTO journal_entries
            (account_id, delta_micros, balance_after_micros, kind, reference, created_at)
            VALUES (v_account, v_amount, v_net + p_taken, 'release', p_hold, p_now),
                   (v_account, -p_taken, v_net, 'capture', p_hold, p_now);
        INSERT INTO spend_buckets (account_id, bucket_start, amount_micros)
            VALUES (v_account, aibank_bucket(p_now), p_taken)
            ON CONFLICT (account_id, bucket_start)
            DO UPDATE SET amount_micros = spend_buckets.amount_micros + excluded.amount_micros;
    ELSE
        INSERT INTO journal_entries
            (account_id, delta_micros, balance_after_micros, kind, reference, created_at)
            VALUES (v_account, v_amount, v_net, 'release', p_hold, p_now);
    END IF;
    v_owed := LEAST(v_owed, p_beyond);
    IF p_usage IS NOT NULL THEN
        INSERT INTO usage_events (id, agent_id, api_key_id, provider, model, input_tokens,
                                  output_tokens, cost_micros, request_id, created_at,
                                  description, owed_micros, price_version, deployment)
            VALUES (p_usage, p_agent, p_api_key, p_provider, p_model, p_input, p_output,
                    p_taken, p_request, p_now, p_description, v_owed, p_price_version,
                    p_deployment);
    END IF;
    IF p_chain IS NOT NULL THEN
        UPDATE x402_payments SET cost_micros = p_taken
         WHERE chain = p_chain AND tx_hash = p_tx_hash;
    END IF;
    IF p_key IS NOT NULL THEN
        UPDATE api_keys SET minute_tokens = CASE WHEN minute_tokens + p_token_delta < 0
            THEN 0 ELSE minute_tokens + p_token_delta END
         WHERE id = p_key AND minute_window_start = p_window_start;
    END IF;
    IF p_unsynced THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    balance := v_balance;
    owed := v_owed;
    RETURN NEXT;
END $$;
