DROP TABLE service_subscriptions;
DROP TABLE services;
