//! process-document: `POST /v1/documents` and the reads `GET /v1/documents/{id}`
//! and `/{id}/chunks`.

use super::{HandlerOutcome, HandlerResult};
use crate::auth::Caller;
use crate::config::Config;
use crate::documents::{self, ProcessedDocument, Upload, UploadError};
use crate::envelope::Envelope;
use crate::http;
use crate::idempotency::IdempotencyKey;
use crate::ids::new_id;
use crate::problem::ApiError;
use crate::store::{self, int, s, stmt};
use serde::Deserialize;
use serde_json::{json, Value};
use worker::{D1Database, Response, Result};

/// Maps an upload error to the HTTP error: unsupported type → 415, the rest 400.
pub fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::UnsupportedType(t) => ApiError::UnsupportedMediaType(format!(
            "content type {t:?} is not supported; use text/plain, text/markdown, text/html, application/json or text/csv"
        )),
        UploadError::InvalidJson(_) => ApiError::bad_request("invalid-json", e.to_string()),
        UploadError::UnknownField(_) => ApiError::bad_request("unknown-field", e.to_string()),
        UploadError::BadBase64(_) => ApiError::bad_request("invalid-base64", e.to_string()),
        UploadError::MissingField(_) | UploadError::InvalidField { .. } => {
            ApiError::bad_request("invalid-field", e.to_string())
        }
    }
}

/// Validates an upload (before any idempotency work: an invalid request is not
/// stored, as with Stripe).
pub fn validate(body: &[u8], cfg: &Config) -> std::result::Result<Upload, ApiError> {
    documents::parse_upload(body, cfg.chunk_size, cfg.chunk_overlap).map_err(upload_error)
}

/// The `derive` key policy: without a key, the key is derived from the tenant and
/// everything in the upload that changes the answer
/// ([`documents::derived_key_digest`]), so re-uploading the same document returns
/// it, and the same bytes under another name, type or chunking are a new one —
/// never a 422.
pub fn derived_key(tenant: &str, body: &[u8], upload: &Upload) -> IdempotencyKey {
    IdempotencyKey::derived(format!(
        "derived:{}",
        documents::derived_key_digest(tenant, body, upload)
    ))
}

fn response_body(
    id: &str,
    doc: &ProcessedDocument,
    chunk_ids: &[String],
    upload: &Upload,
    now: i64,
) -> Value {
    json!({
        "id": id,
        "filename": doc.filename,
        "content_type": doc.content_type.as_str(),
        "sha256": doc.sha256,
        "size_bytes": doc.size_bytes,
        "stats": {
            "words": doc.stats.words,
            "lines": doc.stats.lines,
            "chars": doc.stats.chars,
            "chunks": doc.chunks.len(),
        },
        "chunking": { "size": upload.chunk_size, "overlap": upload.chunk_overlap },
        "chunk_ids": chunk_ids,
        "created_at": now,
    })
}

/// Processes the document and returns the 201 answer with its rows.
pub fn execute(db: &D1Database, env: &Envelope, upload: &Upload, now: i64) -> HandlerResult {
    let doc = documents::process(upload)
        .map_err(|e| ApiError::bad_request("unreadable-document", e.to_string()))?;
    let id = new_id("doc");
    let chunk_ids: Vec<String> = (0..doc.chunks.len())
        .map(|i| format!("{id}_c{i}"))
        .collect();
    let mut writes = Vec::with_capacity(doc.chunks.len() + 1);
    writes.push(stmt(
        db,
        "INSERT INTO documents (id, tenant, filename, content_type, sha256, size_bytes, word_count, line_count, \
         char_count, chunk_count, chunk_size, chunk_overlap, text, idempotency_key, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        &[
            s(&id),
            s(&env.scope),
            s(&doc.filename),
            s(doc.content_type.as_str()),
            s(&doc.sha256),
            int(doc.size_bytes as i64),
            int(doc.stats.words as i64),
            int(doc.stats.lines as i64),
            int(doc.stats.chars as i64),
            int(doc.chunks.len() as i64),
            int(upload.chunk_size as i64),
            int(upload.chunk_overlap as i64),
            s(&doc.text),
            s(env.key.as_str()),
            s(&env.caller_sub),
            int(now),
        ],
    )?);
    for (chunk, cid) in doc.chunks.iter().zip(&chunk_ids) {
        writes.push(stmt(
            db,
            "INSERT INTO chunks (id, document_id, tenant, idx, text, start_char, end_char, char_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                s(cid),
                s(&id),
                s(&env.scope),
                int(chunk.index as i64),
                s(&chunk.text),
                int(chunk.start as i64),
                int(chunk.end as i64),
                int((chunk.end - chunk.start) as i64),
            ],
        )?);
    }
    let body = response_body(&id, &doc, &chunk_ids, upload, now);
    Ok(HandlerOutcome::Commit {
        response: http::json_stored(
            201,
            &body,
            &[
                ("location", &format!("/v1/documents/{id}")),
                ("x-document-id", &id),
            ],
        ),
        writes,
        after: None,
    })
}

#[derive(Deserialize, serde::Serialize)]
struct DocumentRow {
    id: String,
    filename: String,
    content_type: String,
    sha256: String,
    size_bytes: f64,
    word_count: f64,
    line_count: f64,
    char_count: f64,
    chunk_count: f64,
    chunk_size: f64,
    chunk_overlap: f64,
    text: String,
    created_at: f64,
}

/// `GET /v1/documents/{id}`: only the caller's tenant's documents exist for it.
pub async fn get(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    let row: Option<DocumentRow> = store::first(db,
        "SELECT id, filename, content_type, sha256, size_bytes, word_count, line_count, char_count, chunk_count, \
         chunk_size, chunk_overlap, text, created_at FROM documents WHERE id = ?1 AND tenant = ?2",
        &[s(id), s(&caller.tenant)]).await?;
    Ok(match row {
        None => http::problem(&ApiError::NotFound(format!("document {id} not found"))),
        Some(r) => http::json(
            200,
            &json!({
                "id": r.id, "filename": r.filename, "content_type": r.content_type, "sha256": r.sha256,
                "size_bytes": r.size_bytes as i64,
                "stats": { "words": r.word_count as i64, "lines": r.line_count as i64,
                           "chars": r.char_count as i64, "chunks": r.chunk_count as i64 },
                "chunking": { "size": r.chunk_size as i64, "overlap": r.chunk_overlap as i64 },
                "text": r.text, "created_at": r.created_at as i64,
            }),
        ),
    })
}

#[derive(Deserialize)]
struct ChunkRow {
    id: String,
    idx: f64,
    text: String,
    start_char: f64,
    end_char: f64,
}

/// `GET /v1/documents/{id}/chunks?offset=&limit=`: paged, in order.
pub async fn chunks(
    db: &D1Database,
    caller: &Caller,
    id: &str,
    offset: u32,
    limit: u32,
) -> Result<Response> {
    let exists: Option<Value> = store::first(
        db,
        "SELECT chunk_count FROM documents WHERE id = ?1 AND tenant = ?2",
        &[s(id), s(&caller.tenant)],
    )
    .await?;
    let Some(doc) = exists else {
        return Ok(http::problem(&ApiError::NotFound(format!(
            "document {id} not found"
        ))));
    };
    let rows: Vec<ChunkRow> = store::all(db,
        "SELECT id, idx, text, start_char, end_char FROM chunks WHERE document_id = ?1 AND tenant = ?2 \
         ORDER BY idx LIMIT ?3 OFFSET ?4",
        &[s(id), s(&caller.tenant), int(limit as i64), int(offset as i64)]).await?;
    let total = doc["chunk_count"].as_f64().unwrap_or(0.0) as i64;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|c| json!({"id": c.id, "index": c.idx as i64, "text": c.text, "start": c.start_char as i64, "end": c.end_char as i64}))
        .collect();
    let next = (offset as i64 + items.len() as i64) < total;
    Ok(http::json(
        200,
        &json!({"document_id": id, "total": total, "offset": offset, "limit": limit,
                "next_offset": if next { Some(offset as i64 + items.len() as i64) } else { None },
                "chunks": items}),
    ))
}
