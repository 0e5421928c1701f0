//! D1 adapter: the idempotency records (the system of record for cached
//! answers, bodies in chunks under the row limit), [`D1Records`] — D1 as the
//! `Records` of `idempotency::execute` —, the sweep of expired records, and the
//! query helpers (`stmt`, `all`, `first`) the handlers' reads and writes use.
//! Thin: SQL and binding, no decisions.
//!
//! Integers go to D1 as `f64` (exact to 2^53): D1 rejects BigInt.

use crate::idempotency::execute::{CommitError, NewRecord, Records};
use crate::idempotency::gate::{Committed, RecordKey};
use crate::idempotency::mirror::{MirrorEntry, MirrorSink};
use crate::idempotency::StoredResponse;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

mod query;
pub use query::{
    all, bad_stored_data, describe, first, int, is_bad_stored_data, n, read_error, read_failure, s,
    stmt,
};

/// The identity of a record: the key's scope (see `idempotency::scope`), route and key.
pub struct RecordId<'a> {
    pub scope: &'a str,
    pub route: &'a str,
    pub key: &'a str,
}

impl<'a> From<&'a RecordKey> for RecordId<'a> {
    fn from(k: &'a RecordKey) -> Self {
        RecordId {
            scope: &k.scope,
            route: &k.route,
            key: &k.key,
        }
    }
}

/// A stored record as read back.
#[derive(Clone)]
pub struct Record {
    pub fingerprint: String,
    pub response: StoredResponse,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Deserialize)]
struct RecordRow {
    fingerprint: String,
    response_status: f64,
    response_headers: String,
    response_body: String,
    created_at: f64,
    expires_at: f64,
    body_chunks: Option<f64>,
}

pub fn encode_headers(h: &[(String, String)]) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "[]".into())
}

fn bad_data(e: impl std::fmt::Display) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

pub fn decode_response(status: f64, headers: &str, body: &str) -> Result<StoredResponse> {
    Ok(StoredResponse {
        status: status as u16,
        headers: serde_json::from_str(headers).map_err(bad_data)?,
        body: B64.decode(body).map_err(bad_data)?,
    })
}

pub fn encode_body(body: &[u8]) -> String {
    B64.encode(body)
}

/// Raw bytes per stored chunk: base64 makes 1 MiB of text, well under the 2 MB
/// row limit of D1 and of Durable Object SQLite, with room for the other columns.
pub const CHUNK_BYTES: usize = 768 * 1024;

/// A body as base64 chunks of at most [`CHUNK_BYTES`] raw bytes; at least one
/// (possibly empty) chunk.
pub fn encode_chunks(body: &[u8]) -> Vec<String> {
    if body.is_empty() {
        return vec![String::new()];
    }
    body.chunks(CHUNK_BYTES).map(|c| B64.encode(c)).collect()
}

/// The body from its base64 chunks, in order.
pub fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    for c in chunks {
        body.extend(B64.decode(c).map_err(bad_data)?);
    }
    Ok(body)
}

const RECORD_INSERT: &str =
    "INSERT INTO idempotency_records (scope, route, key, fingerprint, status, \
     response_status, response_headers, response_body, created_at, completed_at, expires_at, body_chunks) \
     VALUES (?1, ?2, ?3, ?4, 'completed', ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

fn record_args(
    id: &RecordId<'_>,
    fingerprint: &str,
    resp: &StoredResponse,
    first_chunk: &str,
    chunks: usize,
    times: [i64; 3],
) -> [JsValue; 11] {
    let [created_at, completed_at, expires_at] = times;
    [
        s(id.scope),
        s(id.route),
        s(id.key),
        s(fingerprint),
        n(resp.status),
        s(&encode_headers(&resp.headers)),
        s(first_chunk),
        int(created_at),
        int(completed_at),
        int(expires_at),
        int(chunks as i64),
    ]
}

/// Replaces the key's extra body chunks with `chunks[1..]` (in the caller's batch).
fn chunk_statements(
    db: &D1Database,
    id: &RecordId<'_>,
    chunks: &[String],
) -> Result<Vec<D1PreparedStatement>> {
    let mut out = vec![stmt(
        db,
        "DELETE FROM idempotency_record_chunks WHERE scope = ?1 AND route = ?2 AND key = ?3",
        &[s(id.scope), s(id.route), s(id.key)],
    )?];
    for (idx, data) in chunks.iter().enumerate().skip(1) {
        out.push(stmt(
            db,
            "INSERT INTO idempotency_record_chunks (scope, route, key, idx, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[s(id.scope), s(id.route), s(id.key), int(idx as i64), s(data)],
        )?);
    }
    Ok(out)
}

/// Statements that store a completed answer, to append to the handler's batch:
/// clear an expired record for the same key, then insert. The insert fails (and
/// with it the whole batch) if a live record exists: a late holder of a lease
/// that was taken over can never commit a second execution.
pub fn record_statements(
    db: &D1Database,
    id: &RecordId<'_>,
    fingerprint: &str,
    resp: &StoredResponse,
    created_at: i64,
    completed_at: i64,
    expires_at: i64,
) -> Result<Vec<D1PreparedStatement>> {
    let chunks = encode_chunks(&resp.body);
    let times = [created_at, completed_at, expires_at];
    let mut out = vec![
        stmt(
            db,
            "DELETE FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3 AND expires_at <= ?4",
            &[s(id.scope), s(id.route), s(id.key), int(completed_at)],
        )?,
        stmt(
            db,
            RECORD_INSERT,
            &record_args(id, fingerprint, resp, &chunks[0], chunks.len(), times),
        )?,
    ];
    out.extend(chunk_statements(db, id, &chunks)?);
    Ok(out)
}

/// The write-behind form, one batch: the key's object, holding the final
/// answer, is the authority, so its record replaces whatever D1 has for the key
/// (e.g. a record a release raced with) — unless that one is newer (a late copy
/// of an older answer, see `idempotency::mirror`).
pub fn record_upsert(
    db: &D1Database,
    id: &RecordId<'_>,
    fingerprint: &str,
    resp: &StoredResponse,
    created_at: i64,
    expires_at: i64,
) -> Result<Vec<D1PreparedStatement>> {
    let chunks = encode_chunks(&resp.body);
    let times = [created_at, created_at, expires_at];
    let mut out = vec![stmt(
        db,
        &format!(
            "{RECORD_INSERT} ON CONFLICT (scope, route, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             response_status = excluded.response_status, response_headers = excluded.response_headers, \
             response_body = excluded.response_body, created_at = excluded.created_at, \
             completed_at = excluded.completed_at, expires_at = excluded.expires_at, \
             body_chunks = excluded.body_chunks WHERE excluded.created_at >= idempotency_records.created_at"
        ),
        &record_args(id, fingerprint, resp, &chunks[0], chunks.len(), times),
    )?];
    out.extend(chunk_statements(db, id, &chunks)?);
    Ok(out)
}

/// The live (unexpired at `now`) record for a key, if any, its body reassembled.
pub async fn find_record(db: &D1Database, id: &RecordId<'_>, now: i64) -> Result<Option<Record>> {
    let row: Option<RecordRow> = first(db,
        "SELECT fingerprint, response_status, response_headers, response_body, created_at, expires_at, body_chunks \
         FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3 AND expires_at > ?4",
        &[s(id.scope), s(id.route), s(id.key), int(now)]).await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let mut response = decode_response(r.response_status, &r.response_headers, &r.response_body)?;
    let chunks = r.body_chunks.unwrap_or(1.0) as usize;
    if chunks > 1 {
        #[derive(Deserialize)]
        struct Chunk {
            data: String,
        }
        let rest: Vec<Chunk> = all(
            db,
            "SELECT data FROM idempotency_record_chunks WHERE scope = ?1 AND route = ?2 AND key = ?3 \
             ORDER BY idx",
            &[s(id.scope), s(id.route), s(id.key)],
        )
        .await?;
        if rest.len() != chunks - 1 {
            return Err(bad_data(format!(
                "record has {} of its {chunks} body chunks",
                rest.len() + 1
            )));
        }
        response
            .body
            .extend(decode_chunks(rest.iter().map(|c| c.data.as_str()))?);
    }
    Ok(Some(Record {
        fingerprint: r.fingerprint,
        response,
        created_at: r.created_at as i64,
        expires_at: r.expires_at as i64,
    }))
}

pub async fn delete_record(db: &D1Database, id: &RecordId<'_>) -> Result<bool> {
    let key = [s(id.scope), s(id.route), s(id.key)];
    let results = db
        .batch(vec![
            stmt(
                db,
                "DELETE FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3",
                &key,
            )?,
            stmt(
                db,
                "DELETE FROM idempotency_record_chunks WHERE scope = ?1 AND route = ?2 AND key = ?3",
                &key,
            )?,
        ])
        .await?;
    let changed = match results.first() {
        Some(r) => r.meta()?.and_then(|m| m.changes).unwrap_or(0),
        None => 0,
    };
    Ok(changed > 0)
}

/// Deletes a write-behind record if it is still the one that expires at
/// `expires_at` (the key was released while it was on its way), with its chunks.
pub async fn take_back_record(db: &D1Database, id: &RecordId<'_>, expires_at: i64) -> Result<()> {
    db.batch(vec![
        stmt(
            db,
            "DELETE FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3 AND expires_at = ?4",
            &[s(id.scope), s(id.route), s(id.key), int(expires_at)],
        )?,
        stmt(
            db,
            "DELETE FROM idempotency_record_chunks WHERE scope = ?1 AND route = ?2 AND key = ?3 \
             AND NOT EXISTS (SELECT 1 FROM idempotency_records r WHERE r.scope = ?1 AND r.route = ?2 AND r.key = ?3)",
            &[s(id.scope), s(id.route), s(id.key)],
        )?,
    ])
    .await?;
    Ok(())
}

/// Deletes expired records in batches of `batch` rows, at most `rounds` batches.
/// Returns the number deleted.
pub async fn sweep_expired(db: &D1Database, now: i64, batch: u32, rounds: u32) -> Result<u64> {
    let mut total = 0u64;
    for _ in 0..rounds {
        let res = stmt(
            db,
            "DELETE FROM idempotency_records WHERE rowid IN \
             (SELECT rowid FROM idempotency_records WHERE expires_at <= ?1 LIMIT ?2)",
            &[int(now), n(batch)],
        )?
        .run()
        .await?;
        let changed = res.meta()?.and_then(|m| m.changes).unwrap_or(0) as u64;
        total += changed;
        if changed < batch as u64 {
            break;
        }
    }
    // Chunks of records that expired (bounded like the records).
    stmt(
        db,
        "DELETE FROM idempotency_record_chunks WHERE rowid IN (SELECT c.rowid FROM idempotency_record_chunks c \
         WHERE NOT EXISTS (SELECT 1 FROM idempotency_records r WHERE r.scope = c.scope AND r.route = c.route \
         AND r.key = c.key) LIMIT ?1)",
        &[n(batch.saturating_mul(rounds))],
    )?
    .run()
    .await?;
    Ok(total)
}

/// Many write-behind records in one statement: a single JSON parameter read with
/// `json_each` (D1 allows 100 bound parameters, a value of 2 MB), each row
/// upserted like [`record_upsert`] (newer wins). Records whose body needs more
/// than one chunk never come here (see `idempotency::mirror::MAX_SHARED_BYTES`).
const RECORDS_UPSERT_MANY: &str = "INSERT INTO idempotency_records (scope, route, key, fingerprint, status, \
     response_status, response_headers, response_body, created_at, completed_at, expires_at, body_chunks) \
     SELECT json_extract(value, '$.scope'), json_extract(value, '$.route'), json_extract(value, '$.key'), \
     json_extract(value, '$.fingerprint'), 'completed', json_extract(value, '$.status'), \
     json_extract(value, '$.headers'), json_extract(value, '$.body'), json_extract(value, '$.created_at'), \
     json_extract(value, '$.created_at'), json_extract(value, '$.expires_at'), 1 FROM json_each(?1) WHERE 1 \
     ON CONFLICT (scope, route, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
     response_status = excluded.response_status, response_headers = excluded.response_headers, \
     response_body = excluded.response_body, created_at = excluded.created_at, \
     completed_at = excluded.completed_at, expires_at = excluded.expires_at, body_chunks = 1 \
     WHERE excluded.created_at >= idempotency_records.created_at";

/// D1 as the mirror's [`MirrorSink`].
pub struct D1Mirror<'a> {
    pub db: &'a D1Database,
}

impl MirrorSink for D1Mirror<'_> {
    type Error = worker::Error;

    async fn upsert_many(&self, entries: &[&MirrorEntry]) -> Result<()> {
        let json = serde_json::to_string(entries).map_err(bad_data)?;
        stmt(self.db, RECORDS_UPSERT_MANY, &[s(&json)])?
            .run()
            .await?;
        Ok(())
    }

    async fn upsert_one(&self, e: &MirrorEntry) -> Result<u32> {
        let response = decode_response(e.status as f64, &e.headers, &e.body)?;
        let key = e.record_key();
        let statements = record_upsert(
            self.db,
            &RecordId::from(&key),
            &e.fingerprint,
            &response,
            e.created_at,
            e.expires_at,
        )?;
        let n = statements.len() as u32;
        self.db.batch(statements).await?;
        Ok(n)
    }

    async fn delete(&self, key: &RecordKey, expires_at: Option<i64>) -> Result<bool> {
        let id = RecordId::from(key);
        match expires_at {
            None => delete_record(self.db, &id).await,
            Some(at) => take_back_record(self.db, &id, at).await.map(|()| false),
        }
    }
}

/// D1 as the system of record of [`crate::idempotency::execute`].
pub struct D1Records<'a> {
    pub db: &'a D1Database,
    /// Test hook: a statement that fails inside the batch, so the whole batch
    /// (domain rows included) must roll back.
    pub fail_commit: bool,
}

/// A batch that lost a race: another request inserted the same key first (a
/// record's or an audit row's primary key, or a UNIQUE column).
///
/// D1 reports a failed statement only as text (`D1_ERROR: UNIQUE constraint
/// failed: …`, SQLite's own wording): workers-rs's `D1Error` wraps a plain JS
/// `Error` whose only content is that message, and workerd's D1 binding builds
/// it from the database's error string, with no code. So SQLite's fixed phrases
/// for the two constraints a race can break are what is looked for; a CHECK,
/// NOT NULL or FOREIGN KEY failure is a bug, not a race, and is not retried.
fn is_conflict(e: &worker::Error) -> bool {
    let m = e.to_string();
    m.contains("UNIQUE constraint failed") || m.contains("PRIMARY KEY constraint failed")
}

impl Records for D1Records<'_> {
    type Writes = Vec<D1PreparedStatement>;
    type Error = worker::Error;

    fn is_empty(writes: &Self::Writes) -> bool {
        writes.is_empty()
    }

    async fn find(&self, key: &RecordKey, now: i64) -> Result<Option<Committed>> {
        Ok(find_record(self.db, &RecordId::from(key), now)
            .await?
            .map(|r| Committed {
                fingerprint: r.fingerprint,
                response: r.response,
                created_at: r.created_at,
                expires_at: r.expires_at,
            }))
    }

    async fn upsert(&self, key: &RecordKey, r: &Committed) -> Result<()> {
        let statements = record_upsert(
            self.db,
            &RecordId::from(key),
            &r.fingerprint,
            &r.response,
            r.created_at,
            r.expires_at,
        )?;
        self.db.batch(statements).await?;
        Ok(())
    }

    async fn take_back(&self, key: &RecordKey, expires_at: i64) -> Result<()> {
        take_back_record(self.db, &RecordId::from(key), expires_at).await
    }

    async fn delete(&self, key: &RecordKey) -> Result<bool> {
        delete_record(self.db, &RecordId::from(key)).await
    }

    async fn commit(
        &self,
        mut writes: Self::Writes,
        record: Option<NewRecord<'_>>,
    ) -> std::result::Result<(), CommitError<worker::Error>> {
        let build = |writes: &mut Self::Writes| -> Result<()> {
            if let Some(r) = &record {
                writes.extend(record_statements(
                    self.db,
                    &RecordId::from(r.key),
                    r.fingerprint,
                    r.response,
                    r.created_at,
                    r.completed_at,
                    r.expires_at,
                )?);
            }
            if self.fail_commit {
                writes.push(
                    self.db
                        .prepare("INSERT INTO no_such_table_simulated_failure VALUES (1)"),
                );
            }
            Ok(())
        };
        build(&mut writes).map_err(CommitError::Other)?;
        match self.db.batch(writes).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Err(CommitError::Conflict(e)),
            Err(e) => {
                worker::console_error!("D1 batch failed: {e}");
                Err(CommitError::Other(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_constraint_is_a_conflict_never_an_outage() {
        // D1's wording (SQLite's fixed phrase, in the error D1 throws).
        let conflicts = [
            "D1_ERROR: UNIQUE constraint failed: idempotency_records.scope, idempotency_records.route, idempotency_records.key: SQLITE_CONSTRAINT",
            "D1_ERROR: PRIMARY KEY constraint failed: staging_exports.id",
        ];
        for m in conflicts {
            assert!(is_conflict(&worker::Error::JsError(m.into())), "{m}");
        }
        let outages = [
            // Bugs, not races: retrying the handler cannot help.
            "D1_ERROR: CHECK constraint failed: export_format IN ('csv', 'json'): SQLITE_CONSTRAINT",
            "D1_ERROR: NOT NULL constraint failed: documents.text: SQLITE_CONSTRAINT",
            "D1_ERROR: FOREIGN KEY constraint failed: SQLITE_CONSTRAINT",
            "D1_ERROR: database is locked",
            "D1_ERROR: Network connection lost.",
            "D1_ERROR: no such table: no_such_table_simulated_failure: SQLITE_ERROR",
            "D1 DB is overloaded. Too many requests queued.",
        ];
        for m in outages {
            assert!(!is_conflict(&worker::Error::JsError(m.into())), "{m}");
        }
        assert!(!is_conflict(&worker::Error::BindingError("DB".into())));
    }

    #[test]
    fn bodies_round_trip_through_chunks_that_each_fit_a_row() {
        for len in [
            0,
            1,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * 1024 * 1024 + 7,
        ] {
            let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let chunks = encode_chunks(&body);
            assert_eq!(chunks.len(), len.div_ceil(CHUNK_BYTES).max(1), "len {len}");
            assert!(chunks.iter().all(|c| c.len() <= 1024 * 1024), "len {len}");
            assert_eq!(
                decode_chunks(chunks.iter().map(|c| c.as_str())).unwrap(),
                body
            );
        }
    }
}
