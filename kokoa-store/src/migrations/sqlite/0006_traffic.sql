-- Schema version 6: the built-in traffic analytics. One row per bucket of a series:
-- resolution is the bucket length in seconds (60: kept a day, 3600: kept 30 days), scope
-- says what the series is about ('host': a route's host name over every edge, 'edge': one
-- edge over every host name). Every column but the key is a sum, so control planes add to
-- a bucket with an upsert in any order. latency_N counts requests in the Nth latency
-- bucket (kokoa_core::LATENCY_BOUNDS_MS).

CREATE TABLE traffic (
  resolution INTEGER NOT NULL,
  scope_kind TEXT NOT NULL,
  scope TEXT NOT NULL,
  bucket_start INTEGER NOT NULL,
  requests INTEGER NOT NULL DEFAULT 0,
  errors INTEGER NOT NULL DEFAULT 0,
  latency_0 INTEGER NOT NULL DEFAULT 0,
  latency_1 INTEGER NOT NULL DEFAULT 0,
  latency_2 INTEGER NOT NULL DEFAULT 0,
  latency_3 INTEGER NOT NULL DEFAULT 0,
  latency_4 INTEGER NOT NULL DEFAULT 0,
  latency_5 INTEGER NOT NULL DEFAULT 0,
  latency_6 INTEGER NOT NULL DEFAULT 0,
  latency_7 INTEGER NOT NULL DEFAULT 0,
  latency_8 INTEGER NOT NULL DEFAULT 0,
  latency_9 INTEGER NOT NULL DEFAULT 0,
  latency_10 INTEGER NOT NULL DEFAULT 0,
  latency_11 INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (resolution, scope_kind, scope, bucket_start)
);
CREATE INDEX traffic_age ON traffic (resolution, bucket_start);
