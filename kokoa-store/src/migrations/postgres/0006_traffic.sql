-- Schema version 6: the built-in traffic analytics. One row per bucket of a series:
-- resolution is the bucket length in seconds (60: kept a day, 3600: kept 30 days), scope
-- says what the series is about ('host': a route's host name over every edge, 'edge': one
-- edge over every host name). Every column but the key is a sum, so control planes add to
-- a bucket with an upsert in any order. latency_N counts requests in the Nth latency
-- bucket (kokoa_core::LATENCY_BOUNDS_MS).

CREATE TABLE traffic (
  resolution BIGINT NOT NULL,
  scope_kind TEXT NOT NULL,
  scope TEXT NOT NULL,
  bucket_start BIGINT NOT NULL,
  requests BIGINT NOT NULL DEFAULT 0,
  errors BIGINT NOT NULL DEFAULT 0,
  latency_0 BIGINT NOT NULL DEFAULT 0,
  latency_1 BIGINT NOT NULL DEFAULT 0,
  latency_2 BIGINT NOT NULL DEFAULT 0,
  latency_3 BIGINT NOT NULL DEFAULT 0,
  latency_4 BIGINT NOT NULL DEFAULT 0,
  latency_5 BIGINT NOT NULL DEFAULT 0,
  latency_6 BIGINT NOT NULL DEFAULT 0,
  latency_7 BIGINT NOT NULL DEFAULT 0,
  latency_8 BIGINT NOT NULL DEFAULT 0,
  latency_9 BIGINT NOT NULL DEFAULT 0,
  latency_10 BIGINT NOT NULL DEFAULT 0,
  latency_11 BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (resolution, scope_kind, scope, bucket_start)
);
CREATE INDEX traffic_age ON traffic (resolution, bucket_start);
