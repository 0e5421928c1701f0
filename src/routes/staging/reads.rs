//! The staging reads: an export, its approval diff, its audit trail, its file,
//! the tenant's exports, and a batch's progress. Not keyed: the Worker answers
//! them itself.

use super::not_found;
use super::rows::{load_export, select, ExportRow};
use crate::auth::Caller;
use crate::config::Config;
use crate::http;
use crate::problem::ApiError;
use crate::staging::check::{check as staging_check, Checked};
use crate::staging::queue;
use crate::staging::render::{content_disposition, render_file};
use crate::staging::requests::parse_approve_request;
use crate::staging::workflow::ExportState;
use crate::store::{self, int, s};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Headers, Response, ResponseBuilder, Result};

/// `GET /v1/staging/exports/{id}`.
pub async fn get(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    Ok(match load_export(db, &caller.tenant, id).await? {
        Some(row) => http::json(200, &row.to_json()),
        None => http::problem(&not_found(id)),
    })
}

/// `GET …/diff`: the field-level changes made at approval (empty before approval).
pub async fn get_diff(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    Ok(match load_export(db, &caller.tenant, id).await? {
        Some(row) => {
            let changes = match row.diff.as_deref() {
                Some(d) => serde_json::from_str(d)?,
                None => json!([]),
            };
            http::json(
                200,
                &json!({"export_id": row.id, "status": row.status, "approved": row.approved_data.is_some(),
                                   "change_reason": row.change_reason, "changes": changes}),
            )
        }
        None => http::problem(&not_found(id)),
    })
}

/// `GET …/audit`: the trail, oldest first.
pub async fn get_audit(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    if load_export(db, &caller.tenant, id).await?.is_none() {
        return Ok(http::problem(&not_found(id)));
    }
    #[derive(Deserialize)]
    struct Row {
        seq: f64,
        actor: String,
        event: String,
        from_state: Option<String>,
        to_state: String,
        before_snapshot: Option<String>,
        after_snapshot: String,
        detail: Option<String>,
        idempotency_key: Option<String>,
        created_at: f64,
    }
    let rows: Vec<Row> = store::all(db,
        "SELECT seq, actor, event, from_state, to_state, before_snapshot, after_snapshot, detail, idempotency_key, created_at \
         FROM staging_audit WHERE export_id = ?1 AND tenant = ?2 ORDER BY seq",
        &[s(id), s(&caller.tenant)]).await?;
    let parse = |t: &str| serde_json::from_str::<Value>(t);
    let entries = rows
        .iter()
        .map(|r| Ok(json!({"seq": r.seq as i64, "actor": r.actor, "event": r.event, "from": r.from_state, "to": r.to_state,
                        "before": r.before_snapshot.as_deref().map(parse).transpose()?, "after": parse(&r.after_snapshot)?,
                        "detail": r.detail.as_deref().map(parse).transpose()?, "idempotency_key": r.idempotency_key,
                        "created_at": r.created_at as i64})))
        .collect::<Result<Vec<Value>>>()?;
    Ok(http::json(
        200,
        &json!({"export_id": id, "entries": entries}),
    ))
}

/// `GET …/file`: the rendered file of a posted export.
pub async fn get_file(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    let Some(row) = load_export(db, &caller.tenant, id).await? else {
        return Ok(http::problem(&not_found(id)));
    };
    let (Some(content), Some(name)) = (row.file_content, row.file_name) else {
        return Ok(http::problem(&ApiError::NotFound(format!(
            "export {id} has no file: it has not been posted"
        ))));
    };
    let headers = Headers::new();
    headers.set(
        "content-type",
        row.file_content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    )?;
    headers.set("content-disposition", &content_disposition(&name))?;
    if let Some(sum) = row.file_checksum {
        headers.set("x-export-sha256", &sum)?;
    }
    Ok(ResponseBuilder::new()
        .with_headers(headers)
        .fixed(content.into_bytes()))
}

/// `GET …/preview`: the file as JSON — the posted file once there is one, else the
/// file posting would render now from the approved data, or before approval from
/// the prepared data (`source` says which), under its default name (a post may
/// name the file itself). Read-only: nothing is recorded.
pub async fn get_preview(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    let Some(row) = load_export(db, &caller.tenant, id).await? else {
        return Ok(http::problem(&not_found(id)));
    };
    let format = row.export_format;
    let (source, name, content) = match (&row.file_content, &row.file_name) {
        (Some(content), Some(name)) => ("posted", name.clone(), content.clone()),
        _ => {
            let (source, data) = match row.approved_data.as_deref() {
                Some(approved) => ("approved", approved),
                None => ("prepared", row.prepared_data.as_str()),
            };
            // Stored data that does not parse is an internal error, never an empty file.
            let data: Value = serde_json::from_str(data)?;
            let file = render_file(format, &data, &row.id, &row.invoice_id);
            (source, file.name, file.content)
        }
    };
    let content_type = match source {
        "posted" => row
            .file_content_type
            .unwrap_or_else(|| format.content_type().into()),
        _ => format.content_type().into(),
    };
    Ok(http::json(
        200,
        &json!({"export_id": row.id, "status": row.status, "source": source, "file_name": name,
                "content_type": content_type, "size": content.len(), "content": content}),
    ))
}

/// `POST …/check`: what approving the export with the body's `approved_data`
/// (or with its prepared data, for an empty body) would do — its findings and
/// score, its changes, whether a second approver would be needed, and the
/// file — written nowhere. Not keyed: it changes nothing.
pub async fn check(
    db: &D1Database,
    cfg: &Config,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response> {
    let req = match parse_approve_request(body, &caller.sub) {
        Ok(req) => req,
        Err(e) => return Ok(http::problem(&ApiError::from(e))),
    };
    let Some(row) = load_export(db, &caller.tenant, id).await? else {
        return Ok(http::problem(&not_found(id)));
    };
    // Stored data that does not parse is an internal error.
    let prepared: Value = serde_json::from_str(&row.prepared_data)?;
    let export = Checked {
        export_id: &row.id,
        invoice_id: &row.invoice_id,
        format: row.export_format,
        prepared: &prepared,
    };
    Ok(
        match staging_check(
            &export,
            req.approved_data.as_ref(),
            cfg.staging_quality_threshold,
            cfg.staging_second_approval,
        ) {
            Ok(checked) => http::json(200, &checked),
            Err(e) => http::problem(&super::data_error(e)),
        },
    )
}

/// `GET /v1/staging/exports?status=&offset=&limit=`.
pub async fn list(
    db: &D1Database,
    cfg: &Config,
    caller: &Caller,
    status: Option<&str>,
    offset: u32,
    limit: u32,
) -> Result<Response> {
    let states = match status.map(queue::parse_status_filter).transpose() {
        Ok(states) => states,
        Err(detail) => {
            return Ok(http::problem(&ApiError::bad_request(
                "invalid-field",
                detail,
            )))
        }
    };
    let rows: Vec<ExportRow> = store::all(
        db,
        &select(
            "WHERE tenant = ?1 AND (?2 IS NULL OR instr(?2, ',' || status || ',') > 0) \
             ORDER BY created_at, id LIMIT ?3 OFFSET ?4",
        ),
        &[
            s(&caller.tenant),
            states
                .as_deref()
                .map_or(JsValue::NULL, |st| s(&queue::status_list(st))),
            int(limit as i64 + 1),
            int(offset as i64),
        ],
    )
    .await?;
    let more = rows.len() > limit as usize;
    let items: Vec<Value> = rows
        .iter()
        .take(limit as usize)
        .map(|r| {
            let mut v = r.to_json();
            if let Some(o) = v.as_object_mut() {
                // What an approver decides with, instead of the whole data.
                let data = r.approved_data.as_deref().unwrap_or(&r.prepared_data);
                let data = serde_json::from_str(data).unwrap_or(Value::Null);
                o.insert("summary".into(), queue::summary(&data));
                let deadline = queue::approval_deadline(
                    r.status,
                    r.updated_at as i64,
                    cfg.staging_approval_timeout_ms,
                );
                o.insert("approval_deadline".into(), json!(deadline));
                for heavy in ["original_data", "prepared_data", "approved_data"] {
                    o.remove(heavy);
                }
            }
            v
        })
        .collect();
    Ok(http::json(
        200,
        &json!({"exports": items, "offset": offset, "limit": limit,
                               "next_offset": more.then(|| offset as i64 + limit as i64)}),
    ))
}

/// `GET /v1/staging/batches/{id}`: progress by state and the average quality.
pub async fn get_batch(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    #[derive(Deserialize)]
    struct Batch {
        total: f64,
        staged: f64,
        invalid: f64,
        created_at: f64,
    }
    let batch: Option<Batch> = store::first(db,
        "SELECT total, staged, invalid, created_at FROM staging_batches WHERE id = ?1 AND tenant = ?2",
        &[s(id), s(&caller.tenant)]).await?;
    let Some(b) = batch else {
        return Ok(http::problem(&ApiError::NotFound(format!(
            "batch {id} not found"
        ))));
    };
    #[derive(Deserialize)]
    struct ByState {
        status: ExportState,
        n: f64,
        quality: f64,
    }
    let rows: Vec<ByState> = store::all(
        db,
        "SELECT status, COUNT(*) AS n, SUM(quality_score) AS quality FROM staged_exports \
         WHERE batch_id = ?1 AND tenant = ?2 GROUP BY status",
        &[s(id), s(&caller.tenant)],
    )
    .await?;
    let mut by_state = serde_json::Map::new();
    for st in ExportState::ALL {
        by_state.insert(st.as_str().into(), json!(0));
    }
    let (mut n, mut quality) = (0.0, 0.0);
    for r in &rows {
        by_state.insert(r.status.as_str().into(), json!(r.n as i64));
        n += r.n;
        quality += r.quality;
    }
    let average = if n > 0.0 {
        Some((quality / n * 100.0).round() / 100.0)
    } else {
        None
    };
    Ok(http::json(
        200,
        &json!({"batch_id": id, "total": b.total as i64, "staged": b.staged as i64,
                               "invalid": b.invalid as i64, "by_state": by_state, "average_quality": average,
                               "created_at": b.created_at as i64}),
    ))
}
