-- Schema version 1 (PostgreSQL). Times are Unix seconds; enums hold the words of the API
-- ("active", "https", ...). Keep in step with ../sqlite/0001_initial.sql: the store logic
-- runs the same statements on both. Every number is BIGINT so that it reads back as one type.

CREATE TABLE origins (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  domain TEXT,
  status TEXT NOT NULL,
  last_heartbeat BIGINT,
  last_metrics TEXT,
  network_cidr TEXT NOT NULL UNIQUE,
  wireguard_ip TEXT NOT NULL UNIQUE,
  wireguard_public_key TEXT NOT NULL,
  wireguard_private_key_encrypted TEXT NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE TABLE origin_services (
  id TEXT PRIMARY KEY,
  origin_id TEXT NOT NULL REFERENCES origins (id),
  name TEXT NOT NULL,
  port BIGINT NOT NULL,
  protocol TEXT NOT NULL,
  health_check_path TEXT,
  created_at BIGINT NOT NULL,
  UNIQUE (origin_id, name)
);

CREATE TABLE routes (
  id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL UNIQUE,
  origin_id TEXT NOT NULL REFERENCES origins (id),
  target_port BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX routes_origin_id ON routes (origin_id);

-- origin_id has no foreign key: an edge created for an origin stays in the history after
-- that origin is deleted.
CREATE TABLE edge_nodes (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  origin_id TEXT,
  provider TEXT NOT NULL,
  region TEXT NOT NULL,
  public_ip TEXT,
  status TEXT NOT NULL,
  last_heartbeat BIGINT,
  last_metrics TEXT,
  health_check_failures BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  deleted_at BIGINT
);

CREATE TABLE edge_tunnels (
  edge_node_id TEXT NOT NULL REFERENCES edge_nodes (id),
  origin_id TEXT NOT NULL REFERENCES origins (id),
  wireguard_ip TEXT NOT NULL,
  listen_port BIGINT NOT NULL,
  public_key TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  private_key_encrypted TEXT NOT NULL,
  PRIMARY KEY (edge_node_id, origin_id),
  UNIQUE (origin_id, wireguard_ip),
  UNIQUE (edge_node_id, listen_port)
);

CREATE TABLE dns_records (
  id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  record_type TEXT NOT NULL,
  value TEXT NOT NULL,
  provider_record_id TEXT,
  provider TEXT NOT NULL,
  edge_node_id TEXT REFERENCES edge_nodes (id),
  created_at BIGINT NOT NULL
);
CREATE INDEX dns_records_hostname ON dns_records (hostname);

-- id only orders checks that share a time.
CREATE TABLE health_checks (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  edge_node_id TEXT NOT NULL REFERENCES edge_nodes (id),
  status TEXT NOT NULL,
  response_time_ms BIGINT,
  error_message TEXT,
  checked_at BIGINT NOT NULL
);
CREATE INDEX health_checks_edge ON health_checks (edge_node_id, checked_at, id);

CREATE TABLE users (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL DEFAULT 'admin',
  created_at BIGINT NOT NULL,
  password_hash TEXT NOT NULL
);

CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  last_used_at BIGINT,
  revoked_at BIGINT,
  token_hash TEXT NOT NULL UNIQUE
);

-- node_kind/node_id point at edge_nodes or origins, so there is no foreign key.
CREATE TABLE enrollments (
  id TEXT PRIMARY KEY,
  node_kind TEXT NOT NULL CHECK (node_kind IN ('edge', 'origin')),
  node_id TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  uses_left BIGINT NOT NULL CHECK (uses_left >= 0),
  created_at BIGINT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE
);
CREATE INDEX enrollments_node ON enrollments (node_kind, node_id);

CREATE TABLE node_credentials (
  id TEXT PRIMARY KEY,
  node_kind TEXT NOT NULL CHECK (node_kind IN ('edge', 'origin')),
  node_id TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT,
  token_hash TEXT NOT NULL UNIQUE
);
CREATE INDEX node_credentials_node ON node_credentials (node_kind, node_id);
