-- Schema version 2 (PostgreSQL): certificates, DNS zones, events, small shared values (leases,
-- settings, challenge responses); the edge automation's record and the route's
-- certificate mode. Keep in step with ../sqlite/0002_operations.sql.

CREATE TABLE certificates (
  id TEXT PRIMARY KEY,
  -- The names it covers, sorted and joined by commas.
  names TEXT NOT NULL UNIQUE,
  source TEXT NOT NULL,
  method TEXT NOT NULL,
  issuer TEXT,
  not_before BIGINT,
  not_after BIGINT,
  sha256 TEXT,
  chain_pem TEXT,
  next_renewal BIGINT,
  failures BIGINT NOT NULL,
  last_error TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  private_key_encrypted TEXT
);

CREATE TABLE dns_zones (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  provider TEXT NOT NULL,
  provider_zone_id TEXT,
  -- A JSON object of the provider's settings that are not secret.
  settings TEXT NOT NULL,
  ttl BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  credentials_encrypted TEXT
);

-- An identity: numbers are never reused, so a reader that saw event N misses nothing by
-- asking for the ones after N.
CREATE TABLE events (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind TEXT NOT NULL,
  severity TEXT NOT NULL,
  subject TEXT,
  message TEXT NOT NULL,
  data TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);
CREATE INDEX events_subject ON events (subject, id);

CREATE TABLE shared_values (
  namespace TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  expires_at BIGINT,
  PRIMARY KEY (namespace, key)
);

ALTER TABLE routes ADD COLUMN certificate TEXT NOT NULL DEFAULT 'http-01';
ALTER TABLE edge_nodes ADD COLUMN instance_id TEXT;
-- A JSON object: the step the automation is at with the edge, and what it needs to go on.
ALTER TABLE edge_nodes ADD COLUMN lifecycle TEXT;
ALTER TABLE dns_records ADD COLUMN zone_id TEXT REFERENCES dns_zones (id);
CREATE INDEX dns_records_zone ON dns_records (zone_id);
ALTER TABLE health_checks ADD COLUMN check_name TEXT NOT NULL DEFAULT 'http';
