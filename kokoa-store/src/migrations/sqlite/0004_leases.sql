-- Schema version 4 (SQLite): fenced leader election (SPEC §11) and retention.
-- A lease is held until a time of the database's clock; each new term gets the next
-- fencing token. A leader records each of its side effects as an intent under its token,
-- in the transaction that checks the term is still running, so a leader that stalled past
-- its term cannot act once another has taken over. Keep in step with
-- ../postgres/0004_leases.sql.

CREATE TABLE leases (
  name TEXT PRIMARY KEY,
  -- NULL once released.
  holder TEXT,
  -- The token of the latest term. Rows are never deleted and the token never goes down,
  -- so no token is given out twice.
  token INTEGER NOT NULL,
  -- End of the latest term, in Unix milliseconds of the database's clock.
  expires_at_ms INTEGER NOT NULL
);

-- AUTOINCREMENT: a number is never given out again, also after the newest intents are
-- pruned.
CREATE TABLE intents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  lease TEXT NOT NULL REFERENCES leases (name),
  token INTEGER NOT NULL,
  holder TEXT NOT NULL,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  -- JSON.
  detail TEXT NOT NULL,
  -- Unix seconds of the database's clock.
  created_at INTEGER NOT NULL
);
CREATE INDEX intents_created_at ON intents (created_at, id);

-- For pruning the history by age across all edges.
CREATE INDEX health_checks_checked_at ON health_checks (checked_at);
