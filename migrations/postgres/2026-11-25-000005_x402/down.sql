DROP TABLE x402_payments;
