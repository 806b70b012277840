-- Schema version 3 (SQLite): what the Web UI's login needs. The user's second factor and
-- lockout, their recovery codes (hashed, each used once) and their sessions (stored under
-- the hash of the cookie's token). Keep in step with ../postgres/0003_users.sql.

ALTER TABLE users ADD COLUMN totp_secret_encrypted TEXT;
-- 0 or 1.
ALTER TABLE users ADD COLUMN totp_enabled INTEGER NOT NULL DEFAULT 0;
-- The last time step a code was accepted for, so that no code is accepted twice.
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until INTEGER;

CREATE TABLE user_recovery_codes (
  user_id TEXT NOT NULL REFERENCES users (id),
  code_hash TEXT NOT NULL,
  PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id),
  stage TEXT NOT NULL CHECK (stage IN ('second_factor', 'full')),
  csrf_token TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  token_hash TEXT NOT NULL UNIQUE
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
