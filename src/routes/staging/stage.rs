//! Staging: one export (`POST /v1/staging/exports`) or a batch of them
//! (`POST /v1/staging/batches`), each new row with its audit row.

use super::rows::new_export;
use super::writes::{insert_audits, insert_exports, Audit};
use super::{ok_export, HandlerOutcome, HandlerResult};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::http;
use crate::ids::new_id;
use crate::staging::data::validate_export_data;
use crate::staging::requests::{
    parse_batch_request, parse_stage_request, stage_request_from_value,
};
use crate::store::{int, s, stmt};
use serde_json::json;
use worker::D1Database;

/// `POST /v1/staging/exports`.
pub fn stage(db: &D1Database, env: &Envelope, body: &[u8], now: i64) -> HandlerResult {
    let req = parse_stage_request(body, &env.caller_sub)?;
    let validation = validate_export_data(&req.export_data)?;
    let row = new_export(&env.scope, &env.caller_sub, None, &req, &validation, now);
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

/// `POST /v1/staging/batches`: each item validated on its own; the valid ones are
/// staged, all in one D1 batch with the batch row and their audit rows.
pub fn stage_batch(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    body: &[u8],
    now: i64,
) -> HandlerResult {
    let req = parse_batch_request(body, cfg.staging_max_batch_size, &env.caller_sub)?;
    let batch_id = new_id("batch");
    let mut rows = Vec::new();
    let mut items = Vec::with_capacity(req.exports.len());
    for (i, item) in req.exports.iter().enumerate() {
        let staged = stage_request_from_value(item, &format!("exports[{i}]"), &env.caller_sub)
            .map_err(|e| e.to_string())
            .and_then(|r| {
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
