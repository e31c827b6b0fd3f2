DROP TABLE agent_claims;
DROP TABLE wallet_transfers;
DROP TABLE wallet_nonces;
DROP TABLE wallet_allowlist;
DROP TABLE wallets;
