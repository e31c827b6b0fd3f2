DROP TABLE x402_settler_nonces;
DROP TABLE x402_authorizations;
