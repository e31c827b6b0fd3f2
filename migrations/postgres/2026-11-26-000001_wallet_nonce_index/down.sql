DROP INDEX wallet_transfers_by_nonce;
