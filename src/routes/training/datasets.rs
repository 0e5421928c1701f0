//! Datasets: `POST /v1/training-data` builds one from the tenant's documents and
//! stores it with its examples; `GET /v1/training-data/{id}` and its `.jsonl`
//! read it back.

use super::not_found;
use crate::auth::Caller;
use crate::envelope::Envelope;
use crate::http;
use crate::ids::new_id;
use crate::problem::ApiError;
use crate::routes::{HandlerOutcome, HandlerResult};
use crate::store::{self, int, s, stmt};
use crate::training::{build_examples, DatasetRequest, Format, SourceDocument};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Headers, Response, ResponseBuilder, Result};

/// Examples per multi-row INSERT: 5 bound values each, under D1's 100 per statement.
const EXAMPLES_PER_INSERT: usize = 20;
/// Examples per page of the JSONL stream: memory stays bounded whatever the size.
const JSONL_PAGE: i64 = 500;

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads the caller's documents in request order; ids that are unknown or
/// belong to another tenant are returned as missing (the same answer for both:
/// another tenant's ids must not be distinguishable from unknown ones).
async fn load_sources(
    db: &D1Database,
    tenant: &str,
    ids: &[String],
    format: Format,
) -> Result<std::result::Result<Vec<SourceDocument>, Vec<String>>> {
    #[derive(Deserialize)]
    struct DocRow {
        id: String,
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct ChunkRow {
        document_id: String,
        text: String,
    }
    let mut args: Vec<JsValue> = vec![s(tenant)];
    args.extend(ids.iter().map(|i| s(i)));
    let text_col = if format == Format::Chat {
        "text"
    } else {
        "NULL AS text"
    };
    let found: Vec<DocRow> = store::all(
        db,
        &format!(
            "SELECT id, {text_col} FROM documents WHERE tenant = ?1 AND id IN ({})",
            placeholders(2, ids.len())
        ),
        &args,
    )
    .await?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|i| !found.iter().any(|d| &d.id == *i))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    let chunks: Vec<ChunkRow> = if format == Format::Chunks {
        store::all(db,
            &format!(
                "SELECT document_id, text FROM chunks WHERE tenant = ?1 AND document_id IN ({}) ORDER BY document_id, idx",
                placeholders(2, ids.len())
            ),
            &args).await?
    } else {
        vec![]
    };
    let mut by_id: std::collections::HashMap<String, SourceDocument> = found
        .into_iter()
        .map(|d| {
            (
                d.id.clone(),
                SourceDocument {
                    id: d.id,
                    text: d.text.unwrap_or_default(),
                    chunks: vec![],
                },
            )
        })
        .collect();
    for c in chunks {
        if let Some(d) = by_id.get_mut(&c.document_id) {
            d.chunks.push(c.text);
        }
    }
    Ok(Ok(ids.iter().filter_map(|i| by_id.remove(i)).collect()))
}

/// `POST /v1/training-data`: builds the dataset and stores it with its examples.
pub async fn create_dataset(
    db: &D1Database,
    env: &Envelope,
    req: &DatasetRequest,
    now: i64,
) -> HandlerResult {
    let docs = match load_sources(db, &env.scope, &req.document_ids, req.format).await? {
        Ok(d) => d,
        Err(missing) => {
            return Err(
                ApiError::NotFound(format!("documents not found: {}", missing.join(", "))).into(),
            )
        }
    };
    let (examples, stats) = build_examples(&docs, req.format, req.min_chars, req.max_examples);
    let id = new_id("ds");
    let per_document: Vec<Value> = stats
        .per_document
        .iter()
        .map(|(d, n)| json!({"document_id": d, "examples": n}))
        .collect();
    let mut writes: Vec<D1PreparedStatement> =
        Vec::with_capacity(1 + examples.len() / EXAMPLES_PER_INSERT + 1);
    writes.push(stmt(
        db,
        "INSERT INTO datasets (id, tenant, format, document_ids, min_chars, max_examples, example_count, \
         duplicates_dropped, too_short_dropped, char_count, estimated_tokens, per_document, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        &[
            s(&id),
            s(&env.scope),
            s(req.format.as_str()),
            s(&json!(req.document_ids).to_string()),
            int(req.min_chars as i64),
            req.max_examples.map_or(JsValue::NULL, |m| int(m as i64)),
            int(stats.examples as i64),
            int(stats.duplicates_dropped as i64),
            int(stats.too_short_dropped as i64),
            int(stats.chars as i64),
            int(stats.estimated_tokens as i64),
            s(&Value::Array(per_document.clone()).to_string()),
            s(&env.caller_sub),
            int(now),
        ],
    )?);
    for (batch_no, batch) in examples.chunks(EXAMPLES_PER_INSERT).enumerate() {
        let mut args = Vec::with_capacity(batch.len() * 5);
        let mut rows = Vec::with_capacity(batch.len());
        for (i, ex) in batch.iter().enumerate() {
            let p = i * 5;
            rows.push(format!(
                "(?{}, ?{}, ?{}, ?{}, ?{})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            ));
            args.extend([
                s(&id),
                int((batch_no * EXAMPLES_PER_INSERT + i) as i64),
                s(&ex.document_id),
                s(&ex.sha256),
                s(&ex.line),
            ]);
        }
        writes.push(stmt(
            db,
            &format!(
                "INSERT INTO examples (dataset_id, idx, document_id, sha256, line) VALUES {}",
                rows.join(", ")
            ),
            &args,
        )?);
    }
    let body = json!({
        "dataset_id": id,
        "format": req.format.as_str(),
        "document_ids": req.document_ids,
        "stats": {
            "examples": stats.examples,
            "duplicates_dropped": stats.duplicates_dropped,
            "too_short_dropped": stats.too_short_dropped,
            "chars": stats.chars,
            "estimated_tokens": stats.estimated_tokens,
            "per_document": per_document,
        },
        "examples_url": format!("/v1/training-data/{id}.jsonl"),
        "created_at": now,
    });
    Ok(HandlerOutcome::Commit {
        response: http::json_stored(
            201,
            &body,
            &[("location", &format!("/v1/training-data/{id}"))],
        ),
        writes,
        after: None,
    })
}

/// A dataset as stored (its statistics; the examples are rows of `examples`).
#[derive(Deserialize)]
pub(super) struct DatasetRow {
    id: String,
    format: Format,
    document_ids: String,
    min_chars: f64,
    max_examples: Option<f64>,
    pub(super) example_count: f64,
    duplicates_dropped: f64,
    too_short_dropped: f64,
    char_count: f64,
    estimated_tokens: f64,
    per_document: String,
    created_at: f64,
}

/// The tenant's dataset `id`, if it has one (another tenant's is not found).
pub(super) async fn find_dataset(
    db: &D1Database,
    tenant: &str,
    id: &str,
) -> Result<Option<DatasetRow>> {
    store::first(db,
        "SELECT id, format, document_ids, min_chars, max_examples, example_count, duplicates_dropped, \
         too_short_dropped, char_count, estimated_tokens, per_document, created_at \
         FROM datasets WHERE id = ?1 AND tenant = ?2",
        &[s(id), s(tenant)]).await
}

/// `GET /v1/training-data/{id}`.
pub async fn get_dataset(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    let Some(d) = find_dataset(db, &caller.tenant, id).await? else {
        return Ok(not_found("dataset", id));
    };
    let parse = |t: &str| serde_json::from_str::<Value>(t);
    Ok(http::json(
        200,
        &json!({
            "dataset_id": d.id,
            "format": d.format,
            "document_ids": parse(&d.document_ids)?,
            "min_chars": d.min_chars as i64,
            "max_examples": d.max_examples.map(|m| m as i64),
            "stats": {
                "examples": d.example_count as i64,
                "duplicates_dropped": d.duplicates_dropped as i64,
                "too_short_dropped": d.too_short_dropped as i64,
                "chars": d.char_count as i64,
                "estimated_tokens": d.estimated_tokens as i64,
                "per_document": parse(&d.per_document)?,
            },
            "examples_url": format!("/v1/training-data/{}.jsonl", d.id),
            "created_at": d.created_at as i64,
        }),
    ))
}

/// `GET /v1/training-data/{id}.jsonl`: the examples as `application/x-ndjson`,
/// streamed page by page (keyset on `idx`), so memory stays bounded.
pub async fn dataset_jsonl(db: D1Database, caller: &Caller, id: &str) -> Result<Response> {
    if find_dataset(&db, &caller.tenant, id).await?.is_none() {
        return Ok(not_found("dataset", id));
    }
    #[derive(Deserialize)]
    struct Line {
        idx: f64,
        line: String,
    }
    let id = id.to_string();
    let db = std::rc::Rc::new(db);
    let pages = futures_util::stream::try_unfold(Some(-1i64), move |after| {
        let (db, id) = (db.clone(), id.clone());
        async move {
            let Some(after) = after else { return Ok(None) };
            let rows: Vec<Line> = store::all(&db,
                "SELECT idx, line FROM examples WHERE dataset_id = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3",
                &[s(&id), int(after), int(JSONL_PAGE)]).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let next = (rows.len() as i64 == JSONL_PAGE)
                .then(|| rows.last().map_or(after, |r| r.idx as i64));
            let mut out = Vec::new();
            for r in rows {
                out.extend_from_slice(r.line.as_bytes());
                out.push(b'\n');
            }
            Ok::<_, worker::Error>(Some((out, next)))
        }
    });
    let headers = Headers::new();
    headers.set("content-type", "application/x-ndjson")?;
    ResponseBuilder::new()
        .with_headers(headers)
        .from_stream(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_dataset_format_is_parsed_as_the_row_is_read() {
        let stored = |format: &str| {
            json!({"id": "ds_1", "format": format, "document_ids": "[]", "min_chars": 0.0,
                   "max_examples": null, "example_count": 0.0, "duplicates_dropped": 0.0,
                   "too_short_dropped": 0.0, "char_count": 0.0, "estimated_tokens": 0.0,
                   "per_document": "[]", "created_at": 1.0})
        };
        let row: DatasetRow = serde_json::from_value(stored("chat")).unwrap();
        assert_eq!(row.format, Format::Chat);
        assert!(serde_json::from_value::<DatasetRow>(stored("markdown")).is_err());
    }
}
