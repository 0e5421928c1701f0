-- Training data sets and their examples, training jobs and their event history.

CREATE TABLE IF NOT EXISTS datasets (
  id                 TEXT    PRIMARY KEY,
  tenant             TEXT    NOT NULL,
  format             TEXT    NOT NULL CHECK (format IN ('chunks', 'chat')),
  document_ids       TEXT    NOT NULL,  -- JSON array, request order
  min_chars          INTEGER NOT NULL,
  max_examples       INTEGER,
  example_count      INTEGER NOT NULL,
  duplicates_dropped INTEGER NOT NULL,
  too_short_dropped  INTEGER NOT NULL,
  char_count         INTEGER NOT NULL,
  estimated_tokens   INTEGER NOT NULL,
  per_document       TEXT    NOT NULL,  -- JSON object document id -> examples kept
  created_by         TEXT    NOT NULL,
  created_at         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_tenant ON datasets (tenant, created_at);

CREATE TABLE IF NOT EXISTS examples (
  dataset_id  TEXT    NOT NULL REFERENCES datasets (id),
  idx         INTEGER NOT NULL,
  document_id TEXT    NOT NULL,
  sha256      TEXT    NOT NULL,
  line        TEXT    NOT NULL,  -- one JSON object: a JSONL line without its newline
  PRIMARY KEY (dataset_id, idx)
);

CREATE TABLE IF NOT EXISTS training_jobs (
  id               TEXT    PRIMARY KEY,
  tenant           TEXT    NOT NULL,
  dataset_id       TEXT    NOT NULL REFERENCES datasets (id),
  base_model       TEXT    NOT NULL,
  hyperparameters  TEXT    NOT NULL,  -- JSON
  status           TEXT    NOT NULL,
  -- Bumped by every event: an event commits only if the job is still at the
  -- version it read (optimistic concurrency between concurrent events).
  version          INTEGER NOT NULL,
  progress         TEXT,              -- JSON of the last progress event
  artifact         TEXT,
  error            TEXT,
  dispatch_status  TEXT    NOT NULL,  -- 'none' | 'pending' | 'dispatched' | 'failed'
  dispatch_error   TEXT,
  dispatch_attempts INTEGER NOT NULL DEFAULT 0,
  created_by       TEXT    NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS training_jobs_tenant_status ON training_jobs (tenant, status, created_at);

CREATE TABLE IF NOT EXISTS training_job_events (
  job_id     TEXT    NOT NULL REFERENCES training_jobs (id),
  seq        INTEGER NOT NULL,  -- the job version this event produced
  event_id   TEXT    NOT NULL,
  type       TEXT    NOT NULL,
  from_state TEXT    NOT NULL,
  to_state   TEXT    NOT NULL,
  payload    TEXT    NOT NULL,  -- JSON
  actor      TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, seq),
  UNIQUE (job_id, event_id)
);
