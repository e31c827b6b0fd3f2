ALTER FUNCTION aibank_used(text[], bigint) RESET plan_cache_mode;
