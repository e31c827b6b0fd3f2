-- aibank_used's statements are planned once per connection, not on every hold.
--
-- Each of its statements filters on `account_id = ANY (p_ids)`. For a parameter PostgreSQL
-- cannot tell how many ids the array holds, so the generic plan's estimate stays above a
-- custom plan's and the plan cache (plan_cache_mode = auto) plans every statement afresh on
-- every call: about 200 µs of a hold's 600 µs, spent while it holds the agent's account row.
-- The generic plans are the same index scans (each bound by the account, and the journal's
-- also by kind and time; the ledger's tests check them), so the function always uses them.
ALTER FUNCTION aibank_used(text[], bigint) SET plan_cache_mode = force_generic_plan;
