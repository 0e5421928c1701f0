-- idemgate core schema: the idempotency record (system of record for cached
-- responses), documents and their chunks, and replay/conflict/mismatch counters.
-- Timestamps are milliseconds since the Unix epoch.

CREATE TABLE IF NOT EXISTS idempotency_records (
  scope            TEXT    NOT NULL,  -- the caller's tenant
  route            TEXT    NOT NULL,  -- route template, e.g. 'POST /v1/documents'
  key              TEXT    NOT NULL,
  fingerprint      TEXT    NOT NULL,
  status           TEXT    NOT NULL CHECK (status IN ('completed')),
  response_status  INTEGER NOT NULL,
  response_headers TEXT    NOT NULL,  -- JSON array of [name, value]
  response_body    TEXT    NOT NULL,  -- base64
  created_at       INTEGER NOT NULL,
  completed_at     INTEGER NOT NULL,
  expires_at       INTEGER NOT NULL,
  -- One record per (scope, route, key): a second writer's batch fails whole,
  -- so a lease taken over after a crash can never commit a second execution.
  PRIMARY KEY (scope, route, key)
);
CREATE INDEX IF NOT EXISTS idempotency_records_expiry ON idempotency_records (expires_at);

CREATE TABLE IF NOT EXISTS idempotency_counters (
  scope   TEXT    NOT NULL,
  route   TEXT    NOT NULL,
  outcome TEXT    NOT NULL,  -- 'replayed' | 'conflict' | 'mismatch'
  count   INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, route, outcome)
);

CREATE TABLE IF NOT EXISTS documents (
  id              TEXT    PRIMARY KEY,
  tenant          TEXT    NOT NULL,
  filename        TEXT    NOT NULL,
  content_type    TEXT    NOT NULL,
  sha256          TEXT    NOT NULL,
  size_bytes      INTEGER NOT NULL,
  word_count      INTEGER NOT NULL,
  line_count      INTEGER NOT NULL,
  char_count      INTEGER NOT NULL,
  chunk_count     INTEGER NOT NULL,
  chunk_size      INTEGER NOT NULL,
  chunk_overlap   INTEGER NOT NULL,
  text            TEXT    NOT NULL,
  idempotency_key TEXT    NOT NULL,
  created_by      TEXT    NOT NULL,
  created_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_tenant_sha ON documents (tenant, sha256);

CREATE TABLE IF NOT EXISTS chunks (
  id          TEXT    PRIMARY KEY,
  document_id TEXT    NOT NULL REFERENCES documents (id),
  tenant      TEXT    NOT NULL,
  idx         INTEGER NOT NULL,
  text        TEXT    NOT NULL,
  start_char  INTEGER NOT NULL,
  end_char    INTEGER NOT NULL,
  char_count  INTEGER NOT NULL,
  UNIQUE (document_id, idx)
);
