DROP TABLE trading_queries;
