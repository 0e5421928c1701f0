-- Export staging workflow: staged exports, their append-only audit trail, and batches.

CREATE TABLE IF NOT EXISTS staged_exports (
  id                  TEXT    PRIMARY KEY,
  tenant              TEXT    NOT NULL,
  batch_id            TEXT,
  invoice_id          TEXT    NOT NULL,
  export_format       TEXT    NOT NULL CHECK (export_format IN ('csv', 'json')),
  destination_system  TEXT    NOT NULL,
  status              TEXT    NOT NULL,
  -- Bumped by every transition; the audit row of a transition takes seq = the new
  -- version, so two concurrent transitions cannot both commit.
  version             INTEGER NOT NULL,
  original_data       TEXT    NOT NULL,  -- JSON, never changed
  prepared_data       TEXT    NOT NULL,  -- JSON
  approved_data       TEXT,              -- JSON, set on approval
  validation_errors   TEXT    NOT NULL,  -- JSON array of findings (of the data last validated)
  validation_warnings TEXT    NOT NULL,
  quality_score       INTEGER NOT NULL,
  prepared_by         TEXT    NOT NULL,
  reviewed_by         TEXT,
  review_comments     TEXT,
  approved_by         TEXT,
  approved_at         INTEGER,
  change_reason       TEXT,
  approval_comments   TEXT,
  diff                TEXT,              -- JSON array of {path, kind, before, after}
  rejected_by         TEXT,
  rejection_reason    TEXT,
  max_retries         INTEGER NOT NULL,
  retries             INTEGER NOT NULL DEFAULT 0,
  last_error          TEXT,
  file_name           TEXT,
  file_size           INTEGER,
  file_checksum       TEXT,
  file_content        TEXT,
  file_content_type   TEXT,
  external_reference  TEXT,
  posted_by           TEXT,
  posted_at           INTEGER,
  rollback_reason     TEXT,
  rolled_back_by      TEXT,
  rolled_back_at      INTEGER,
  created_at          INTEGER NOT NULL,
  updated_at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS staged_exports_tenant_status ON staged_exports (tenant, status, created_at);
CREATE INDEX IF NOT EXISTS staged_exports_batch ON staged_exports (batch_id);
CREATE INDEX IF NOT EXISTS staged_exports_pending ON staged_exports (status, updated_at);

-- Append-only: written in the same batch as the state change it records; no
-- statement in idemgate updates or deletes these rows.
CREATE TABLE IF NOT EXISTS staging_audit (
  export_id       TEXT    NOT NULL REFERENCES staged_exports (id),
  seq             INTEGER NOT NULL,
  tenant          TEXT    NOT NULL,
  actor           TEXT    NOT NULL,
  event           TEXT    NOT NULL,
  from_state      TEXT,             -- NULL for the staging itself
  to_state        TEXT    NOT NULL,
  before_snapshot TEXT,             -- JSON of the export before, NULL when staged
  after_snapshot  TEXT    NOT NULL, -- JSON of the export after
  detail          TEXT,             -- JSON: reason, comments, delivery error, …
  idempotency_key TEXT,
  created_at      INTEGER NOT NULL,
  PRIMARY KEY (export_id, seq)
);
CREATE TRIGGER IF NOT EXISTS staging_audit_no_update BEFORE UPDATE ON staging_audit
BEGIN SELECT RAISE(ABORT, 'staging_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS staging_audit_no_delete BEFORE DELETE ON staging_audit
BEGIN SELECT RAISE(ABORT, 'staging_audit is append-only'); END;

CREATE TABLE IF NOT EXISTS staging_batches (
  id          TEXT    PRIMARY KEY,
  tenant      TEXT    NOT NULL,
  total       INTEGER NOT NULL,
  staged      INTEGER NOT NULL,
  invalid     INTEGER NOT NULL,
  created_by  TEXT    NOT NULL,
  created_at  INTEGER NOT NULL
);
