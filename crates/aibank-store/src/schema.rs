//! Table definitions, kept by hand in step with `migrations/{sqlite,postgres}`.
//! Times are epoch milliseconds (BIGINT), money is micro-USD (BIGINT): identical on both
//! backends.

diesel::table! {
    platforms (id) {
        id -> Text,
        name -> Text,
        created_at -> BigInt,
        daily_limit_micros -> Nullable<BigInt>,
    }
}

diesel::table! {
    master_keys (id) {
        id -> Text,
        platform_id -> Text,
        name -> Text,
        owner_email -> Nullable<Text>,
        secret_hash -> Text,
        last4 -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    agents (id) {
        id -> Text,
        platform_id -> Nullable<Text>,
        kind -> Text,
        name -> Text,
        email -> Nullable<Text>,
        active -> Bool,
        per_tx_limit_micros -> BigInt,
        daily_limit_micros -> BigInt,
        weekly_limit_micros -> BigInt,
        monthly_limit_micros -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        read_only -> Bool,
        allowed_ips -> Text,
        gateway_enabled -> Bool,
        wallets_enabled -> Bool,
        trading_enabled -> Bool,
        keys_paused_at -> Nullable<BigInt>,
        daily_message_limit -> Nullable<BigInt>,
        allowed_models -> Nullable<Text>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        agent_id -> Text,
        kind -> Text,
        secret_hash -> Text,
        last4 -> Text,
        status -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        name -> Nullable<Text>,
        description -> Nullable<Text>,
        read_only -> Bool,
        allowed_ips -> Text,
        gateway_enabled -> Bool,
        wallets_enabled -> Bool,
        trading_enabled -> Bool,
        public_key_pem -> Nullable<Text>,
        msg_window_start -> BigInt,
        msg_count -> BigInt,
        allowed_models -> Nullable<Text>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
        minute_window_start -> BigInt,
        minute_requests -> BigInt,
        minute_tokens -> BigInt,
    }
}

diesel::table! {
    accounts (id) {
        id -> Text,
        balance_micros -> BigInt,
        total_spent_micros -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        held_micros -> BigInt,
        owed_micros -> BigInt,
    }
}

diesel::table! {
    journal_entries (id) {
        id -> BigInt,
        account_id -> Text,
        delta_micros -> BigInt,
        balance_after_micros -> BigInt,
        kind -> Text,
        reference -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    usage_events (id) {
        id -> Text,
        agent_id -> Text,
        api_key_id -> Nullable<Text>,
        provider -> Text,
        model -> Text,
        input_tokens -> BigInt,
        output_tokens -> BigInt,
        cost_micros -> BigInt,
        request_id -> Nullable<Text>,
        created_at -> BigInt,
        description -> Nullable<Text>,
        owed_micros -> BigInt,
        price_version -> Nullable<Text>,
        deployment -> Nullable<Text>,
    }
}

diesel::table! {
    holds (id) {
        id -> Text,
        account_id -> Text,
        amount_micros -> BigInt,
        captured_micros -> Nullable<BigInt>,
        status -> Text,
        reference -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        settled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    idempotency_keys (scope, key) {
        scope -> Text,
        key -> Text,
        request_hash -> Text,
        status_code -> Integer,
        response_body -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    provider_keys (agent_id, provider) {
        agent_id -> Text,
        provider -> Text,
        sealed -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    used_signatures (digest) {
        digest -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        platform_id -> Nullable<Text>,
        agent_id -> Nullable<Text>,
        actor_type -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_id -> Text,
        details -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    x402_authorizations (chain, payer, nonce) {
        chain -> Text,
        payer -> Text,
        nonce -> Text,
        value_micros -> BigInt,
        valid_before -> BigInt,
        status -> Text,
        settle_nonce -> Nullable<BigInt>,
        tx_hash -> Nullable<Text>,
        raw_tx -> Nullable<Text>,
        resource -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    x402_settler_nonces (chain, address) {
        chain -> Text,
        address -> Text,
    }
}

diesel::table! {
    x402_payments (chain, tx_hash) {
        chain -> Text,
        tx_hash -> Text,
        payer -> Text,
        account_id -> Text,
        amount_micros -> BigInt,
        cost_micros -> BigInt,
        block_number -> BigInt,
        resource -> Text,
        request_id -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    wallets (id) {
        id -> Text,
        agent_id -> Text,
        name -> Text,
        evm_address -> Text,
        solana_address -> Text,
        evm_key_sealed -> Text,
        solana_key_sealed -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    wallet_allowlist (wallet_id, address) {
        wallet_id -> Text,
        address -> Text,
        label -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    wallet_nonces (wallet_id, chain) {
        wallet_id -> Text,
        chain -> Text,
        next_nonce -> BigInt,
    }
}

diesel::table! {
    wallet_transfers (id) {
        id -> Text,
        wallet_id -> Text,
        agent_id -> Text,
        chain -> Text,
        from_address -> Text,
        to_address -> Text,
        currency -> Text,
        amount -> Text,
        amount_base -> Text,
        usd_micros -> BigInt,
        nonce -> Nullable<BigInt>,
        tx_hash -> Nullable<Text>,
        status -> Text,
        error -> Nullable<Text>,
        block_number -> Nullable<BigInt>,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    trading_queries (id) {
        id -> Text,
        wallet_id -> Text,
        agent_id -> Text,
        venue -> Text,
        action -> Text,
        symbol -> Nullable<Text>,
        request_id -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    agent_claims (agent_id) {
        agent_id -> Text,
        code -> Text,
        expires_at -> BigInt,
        claimed_at -> Nullable<BigInt>,
        claimed_email -> Nullable<Text>,
        claimed_platform_id -> Nullable<Text>,
    }
}

diesel::table! {
    spend_buckets (account_id, bucket_start) {
        account_id -> Text,
        bucket_start -> BigInt,
        amount_micros -> BigInt,
    }
}

diesel::table! {
    services (id) {
        id -> Text,
        owner_kind -> Text,
        owner_id -> Text,
        name -> Text,
        description -> Text,
        base_url -> Text,
        openapi_spec -> Text,
        price_micros -> BigInt,
        category -> Text,
        provider_key_header -> Nullable<Text>,
        provider_key_sealed -> Nullable<Text>,
        status -> Text,
        total_calls -> BigInt,
        total_revenue_micros -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    service_subscriptions (service_id, wallet_id) {
        service_id -> Text,
        wallet_id -> Text,
        agent_id -> Text,
        active -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    dashboard_sessions (token_hash) {
        token_hash -> Text,
        platform_id -> Text,
        master_key_id -> Text,
        csrf_token -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::joinable!(master_keys -> platforms (platform_id));
diesel::joinable!(dashboard_sessions -> master_keys (master_key_id));
diesel::joinable!(agents -> platforms (platform_id));
diesel::joinable!(api_keys -> agents (agent_id));
diesel::joinable!(journal_entries -> accounts (account_id));
diesel::joinable!(usage_events -> agents (agent_id));
diesel::joinable!(holds -> accounts (account_id));
diesel::joinable!(wallets -> agents (agent_id));
diesel::joinable!(wallet_transfers -> wallets (wallet_id));
diesel::joinable!(trading_queries -> wallets (wallet_id));
diesel::joinable!(agent_claims -> agents (agent_id));
diesel::joinable!(service_subscriptions -> services (service_id));

diesel::allow_tables_to_appear_in_same_query!(
    platforms,
    master_keys,
    agents,
    api_keys,
    accounts,
    journal_entries,
    usage_events,
    holds,
    idempotency_keys,
    provider_keys,
    used_signatures,
    audit_events,
    x402_authorizations,
    x402_payments,
    x402_settler_nonces,
    wallets,
    wallet_allowlist,
    wallet_nonces,
    wallet_transfers,
    trading_queries,
    agent_claims,
    spend_buckets,
    services,
    service_subscriptions,
    dashboard_sessions,
);
