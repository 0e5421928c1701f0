-- Answers larger than one row (D1 and Durable Object SQLite limit a row to 2 MB):
-- the record keeps the body's first chunk in response_body and says how many
-- chunks there are; chunks 1.. live here, written in the record's own batch.
ALTER TABLE idempotency_records ADD COLUMN body_chunks INTEGER NOT NULL DEFAULT 1;

CREATE TABLE IF NOT EXISTS idempotency_record_chunks (
  scope TEXT    NOT NULL,
  route TEXT    NOT NULL,
  key   TEXT    NOT NULL,
  idx   INTEGER NOT NULL,  -- 1, 2, ...: chunk 0 is the record's response_body
  data  TEXT    NOT NULL,  -- base64
  PRIMARY KEY (scope, route, key, idx)
);
