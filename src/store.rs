//! D1 adapter: the idempotency records (system of record for cached answers),
//! counters, and document rows. Thin: SQL and binding, no decisions.
//!
//! Integers go to D1 as `f64` (exact to 2^53): D1 rejects BigInt.

use crate::idempotency::StoredResponse;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

pub fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

pub fn n(v: impl Into<f64>) -> JsValue {
    JsValue::from_f64(v.into())
}

/// Integer columns bound as f64 (`usize`/`i64` values are far below 2^53 here).
pub fn int(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub fn stmt(db: &D1Database, sql: &str, args: &[JsValue]) -> Result<D1PreparedStatement> {
    db.prepare(sql).bind(args)
}

/// Runs a query and returns every row.
pub async fn all<T: DeserializeOwned>(
    db: &D1Database,
    sql: &str,
    args: &[JsValue],
) -> Result<Vec<T>> {
    stmt(db, sql, args)?.all().await?.results()
}

/// Runs a query and returns its first row, if any.
pub async fn first<T: DeserializeOwned>(
    db: &D1Database,
    sql: &str,
    args: &[JsValue],
) -> Result<Option<T>> {
    stmt(db, sql, args)?.first(None).await
}

/// The identity of a record: tenant scope, route template and key.
pub struct RecordId<'a> {
    pub scope: &'a str,
    pub route: &'a str,
    pub key: &'a str,
}

/// A stored record as read back.
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
}

pub fn encode_headers(h: &[(String, String)]) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "[]".into())
}

pub fn decode_response(status: f64, headers: &str, body: &str) -> Result<StoredResponse> {
    Ok(StoredResponse {
        status: status as u16,
        headers: serde_json::from_str(headers)
            .map_err(|e| worker::Error::RustError(e.to_string()))?,
        body: B64
            .decode(body)
            .map_err(|e| worker::Error::RustError(e.to_string()))?,
    })
}

pub fn encode_body(body: &[u8]) -> String {
    B64.encode(body)
}

const RECORD_INSERT: &str =
    "INSERT INTO idempotency_records (scope, route, key, fingerprint, status, \
     response_status, response_headers, response_body, created_at, completed_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, 'completed', ?5, ?6, ?7, ?8, ?9, ?10)";

fn record_args(
    id: &RecordId<'_>,
    fingerprint: &str,
    resp: &StoredResponse,
    created_at: i64,
    completed_at: i64,
    expires_at: i64,
) -> [JsValue; 10] {
    [
        s(id.scope),
        s(id.route),
        s(id.key),
        s(fingerprint),
        n(resp.status),
        s(&encode_headers(&resp.headers)),
        s(&encode_body(&resp.body)),
        int(created_at),
        int(completed_at),
        int(expires_at),
    ]
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
    Ok(vec![
        stmt(
            db,
            "DELETE FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3 AND expires_at <= ?4",
            &[s(id.scope), s(id.route), s(id.key), int(completed_at)],
        )?,
        stmt(db, RECORD_INSERT, &record_args(id, fingerprint, resp, created_at, completed_at, expires_at))?,
    ])
}

/// The write-behind form: the key's object, holding the final answer, is the
/// authority, so its record replaces whatever D1 has for the key (e.g. a record
/// a release raced with).
pub fn record_upsert(
    db: &D1Database,
    id: &RecordId<'_>,
    fingerprint: &str,
    resp: &StoredResponse,
    created_at: i64,
    expires_at: i64,
) -> Result<D1PreparedStatement> {
    stmt(
        db,
        &format!(
            "{RECORD_INSERT} ON CONFLICT (scope, route, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             response_status = excluded.response_status, response_headers = excluded.response_headers, \
             response_body = excluded.response_body, created_at = excluded.created_at, \
             completed_at = excluded.completed_at, expires_at = excluded.expires_at"
        ),
        &record_args(id, fingerprint, resp, created_at, created_at, expires_at),
    )
}

/// The live (unexpired at `now`) record for a key, if any.
pub async fn find_record(db: &D1Database, id: &RecordId<'_>, now: i64) -> Result<Option<Record>> {
    let row: Option<RecordRow> = first(db,
        "SELECT fingerprint, response_status, response_headers, response_body, created_at, expires_at \
         FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3 AND expires_at > ?4",
        &[s(id.scope), s(id.route), s(id.key), int(now)]).await?;
    row.map(|r| {
        Ok(Record {
            fingerprint: r.fingerprint,
            response: decode_response(r.response_status, &r.response_headers, &r.response_body)?,
            created_at: r.created_at as i64,
            expires_at: r.expires_at as i64,
        })
    })
    .transpose()
}

pub async fn delete_record(db: &D1Database, id: &RecordId<'_>) -> Result<bool> {
    let res = stmt(
        db,
        "DELETE FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3",
        &[s(id.scope), s(id.route), s(id.key)],
    )?
    .run()
    .await?;
    Ok(res.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
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
    Ok(total)
}
