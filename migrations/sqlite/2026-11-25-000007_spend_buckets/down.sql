DROP TABLE spend_buckets;
