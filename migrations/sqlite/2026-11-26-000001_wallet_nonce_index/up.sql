-- A transfer's nonce is the lowest one no live transfer of its wallet and chain holds
-- (repo::wallets::take_nonce): that look-up reads this index instead of every transfer
-- the wallet ever made, while it holds the write lock.
CREATE INDEX wallet_transfers_by_nonce ON wallet_transfers (wallet_id, chain, nonce);
