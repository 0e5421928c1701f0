//! Staging: one export (`POST /v1/staging/exports`) or a batch of them
//! (`POST /v1/staging/batches`), each new row with its audit row.

use super::rows::new_export;
use super::writes::{insert_audits, insert_exports, Audit};
use super::{ok_export, HandlerOutcome, HandlerResult};
use crate::envelope::Envelope;
use crate::http;
use crate::ids::new_id;
use crate::request_body::RequestError;
use crate::staging::data::validate_export_data;
use crate::staging::requests::{parse_batch_request, stage_request_from_value, StageRequest};
use crate::store::{int, s, stmt};
use serde_json::json;
use worker::D1Database;

/// `POST /v1/staging/exports`.
pub fn stage(db: &D1Database, env: &Envelope, req: &StageRequest, now: i64) -> HandlerResult {
    // Scored here (the Worker only checked the data is acceptable): the score
    // and findings are part of the row.
    let validation = validate_export_data(&req.export_data)?;
    let row = new_export(&env.scope, &env.caller_sub, None, req, &validation, now);
    let audit = Audit {
        actor: &env.caller_sub,
        event: "stage",
        before: None,
        after: &row,
        detail: json!({}),
        key: Some(env.key.as_str()),
        now,
    };
    let mut writes = insert_exports(db, std::slice::from_ref(&row))?;
    writes.extend(insert_audits(db, std::slice::from_ref(&audit))?);
    Ok(HandlerOutcome::Commit {
        response: ok_export(201, &row, true),
        writes,
        after: None,
    })
}

/// Parses a `POST /v1/staging/batches` body: its shape must be valid (else the
/// whole request is a 400), while each item is valid or carries its own error
/// (`exports[i]…`), so one bad item does not reject the batch.
/// `caller`: the token's subject, which any `prepared_by` must name.
pub fn parse_batch(
    body: &[u8],
    max_batch: usize,
    caller: &str,
) -> Result<Vec<BatchItem>, RequestError> {
    let req = parse_batch_request(body, max_batch, caller)?;
    Ok(req
        .exports
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let r = stage_request_from_value(item, &format!("exports[{i}]"), caller)
                .map_err(|e| e.to_string())?;
            validate_export_data(&r.export_data)
                .map_err(|e| format!("exports[{i}].export_data: {e}"))?;
            Ok(r)
        })
        .collect())
}

/// One item of a batch: a valid stage request, or why it is not.
pub type BatchItem = Result<StageRequest, String>;

/// `POST /v1/staging/batches`: the valid items are staged, all in one D1 batch
/// with the batch row and their audit rows; the invalid ones are reported.
pub fn stage_batch(
    db: &D1Database,
    env: &Envelope,
    batch: &[BatchItem],
    now: i64,
) -> HandlerResult {
    let batch_id = new_id("batch");
    let mut rows = Vec::new();
    let mut items = Vec::with_capacity(batch.len());
    for (i, item) in batch.iter().enumerate() {
        let staged = item.clone().and_then(|r| {
            validate_export_data(&r.export_data)
                .map(|v| (r, v))
                .map_err(|e| format!("exports[{i}].export_data: {e}"))
        });
        match staged {
            Ok((r, v)) => {
                let row = new_export(&env.scope, &env.caller_sub, Some(&batch_id), &r, &v, now);
                items.push(json!({"index": i, "status": "staged", "export_id": row.id, "invoice_id": r.invoice_id,
                                  "quality_score": v.quality_score, "validation_errors": v.errors.len(),
                                  "validation_warnings": v.warnings.len()}));
                rows.push(row);
            }
            Err(error) => items.push(json!({"index": i, "status": "invalid", "error": error})),
        }
    }
    let audits: Vec<Audit<'_>> = rows
        .iter()
        .map(|r| Audit {
            actor: &env.caller_sub,
            event: "stage",
            before: None,
            after: r,
            detail: json!({"batch_id": batch_id}),
            key: Some(env.key.as_str()),
            now,
        })
        .collect();
    let mut writes = vec![stmt(
        db,
        "INSERT INTO staging_batches (id, tenant, total, staged, invalid, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[s(&batch_id), s(&env.scope), int(items.len() as i64), int(rows.len() as i64), int((items.len() - rows.len()) as i64), s(&env.caller_sub), int(now)],
    )?];
    writes.extend(insert_exports(db, &rows)?);
    writes.extend(insert_audits(db, &audits)?);
    let body = json!({"batch_id": batch_id, "total": items.len(), "staged": rows.len(), "invalid": items.len() - rows.len(), "items": items});
    Ok(HandlerOutcome::Commit {
        response: http::json_stored(
            201,
            &body,
            &[("location", &format!("/v1/staging/batches/{batch_id}"))],
        ),
        writes,
        after: None,
    })
}
