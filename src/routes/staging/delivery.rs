//! Delivery: post (`POST …/post`) renders the approved data and sends it to the
//! destination; rollback (`POST …/rollback`) tells the destination to undo it.
//! A failed delivery answers 502 without storing the answer, so a retry with
//! the same key tries again.

use super::rows::ExportRow;
use super::writes::{transition_writes, Audit};
use super::{commit_transition, conflict, existing_export, HandlerOutcome, HandlerResult};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::http;
use crate::idempotency::fingerprint::sha256_hex;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use crate::staging::render::{export_filename, header_file_name, render_csv, render_json};
use crate::staging::requests::{ExportFormat, PostRequest};
use crate::staging::workflow::{can_post, segregation_refuses, transition, ExportEvent};
use crate::upstream::{self, UpstreamResult};
use serde_json::{json, Value};
use worker::D1Database;

/// The key the destination sees for an export's delivery: derived from the
/// export id, so every attempt to deliver the same export carries the same key.
pub fn delivery_key(export_id: &str) -> String {
    format!("export-{export_id}")
}

/// `POST …/post`: renders the approved data, delivers it when `DESTINATION_URL`
/// is set, and records the file. A failed delivery moves the export to `failed`
/// (committed, with its audit row) and answers 502 without storing it, so a retry
/// with the same key attempts the post again, up to `max_retries`.
///
/// The body (AP Intake's) may name the file (`export_filename`, else one is made
/// from the invoice number and the export id) and carry the caller's
/// `external_reference`: the export's reference is the destination's when it
/// gives one, else the caller's, else a generated one; the caller's is always
/// kept as `caller_reference`.
pub async fn post(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    id: &str,
    req: &PostRequest,
    now: i64,
) -> HandlerResult {
    let before = existing_export(db, &env.scope, id).await?;
    let from = before.status;
    can_post(from, before.attempts()).map_err(|e| conflict(from, e))?;
    if let Some(rule) = segregation_refuses(
        ExportEvent::PostSucceeded,
        &before.prepared_by,
        &env.caller_sub,
    ) {
        return Err(ApiError::Forbidden(format!("segregation of duties: {rule}")).into());
    }
    // Stored data that does not parse is an internal error, never an empty file.
    let data: Value = serde_json::from_str(before.approved_data.as_deref().unwrap_or("null"))
        .map_err(worker::Error::from)?;
    let format = before.export_format;
    let content = match format {
        ExportFormat::Csv => render_csv(&data),
        ExportFormat::Json => render_json(&data, &before.id),
    };
    let invoice_number = data
        .get("invoice_number")
        .and_then(Value::as_str)
        .unwrap_or(&before.invoice_id);
    let file_name = req
        .export_filename
        .clone()
        .unwrap_or_else(|| export_filename(invoice_number, &before.id, format.ext()));
    let checksum = sha256_hex(content.as_bytes());
    let caller_reference = req.external_reference.clone();
    let delivered: Result<String, String> = match cfg.destination_url.as_deref() {
        None => Ok(caller_reference
            .clone()
            .unwrap_or_else(|| format!("local:{}", before.id))),
        Some(url) => {
            let forward = vec![
                (
                    "content-type".to_string(),
                    format.content_type().to_string(),
                ),
                ("x-export-id".to_string(), before.id.clone()),
                (
                    "x-export-filename".to_string(),
                    header_file_name(&file_name),
                ),
                ("x-export-sha256".to_string(), checksum.clone()),
                (
                    "x-destination-system".to_string(),
                    before.destination_system.clone(),
                ),
            ];
            let key = delivery_key(&before.id);
            let key = upstream::OriginKey {
                key: &key,
                fence: None,
            };
            let answer = upstream::call(cfg, url, content.as_bytes(), &forward, Some(key)).await;
            destination_answer(answer).map(|reference| {
                reference
                    .or_else(|| caller_reference.clone())
                    .unwrap_or_else(|| format!("{}:{}", before.destination_system, before.id))
            })
        }
    };
    let mut after = before.clone();
    after.version += 1.0;
    after.updated_at = now as f64;
    match delivered {
        Ok(reference) => {
            let to = transition(from, ExportEvent::PostSucceeded, before.attempts())
                .map_err(|e| conflict(from, e))?;
            after.status = to;
            after.file_size = Some(content.len() as f64);
            after.file_name = Some(file_name);
            after.file_checksum = Some(checksum);
            after.file_content_type = Some(format.content_type().into());
            after.file_content = Some(content);
            after.external_reference = Some(reference);
            after.caller_reference = caller_reference;
            after.posted_by = Some(env.caller_sub.clone());
            after.posted_at = Some(now as f64);
            after.last_error = None;
            let detail = json!({"external_reference": after.external_reference, "caller_reference": after.caller_reference, "file": after.file_name, "sha256": after.file_checksum});
            commit_transition(db, env, &before, &after, "post", detail, now)
        }
        Err(error) => {
            let to = transition(from, ExportEvent::PostFailed, before.attempts())
                .map_err(|e| conflict(from, e))?;
            after.status = to;
            after.retries += 1.0;
            after.last_error = Some(error.clone());
            let audit = Audit {
                actor: &env.caller_sub,
                event: "post_failed",
                before: Some(&before),
                after: &after,
                detail: json!({"error": error}),
                key: Some(env.key.as_str()),
                now,
            };
            let writes = transition_writes(db, &before, &after, &audit)?;
            Ok(HandlerOutcome::Release {
                response: delivery_failed(&after, &error),
                writes,
            })
        }
    }
}

fn delivery_failed(row: &ExportRow, error: &str) -> StoredResponse {
    let mut p = ApiError::UpstreamUnreachable.to_problem();
    p.retype("delivery-failed");
    p.body["detail"] = json!(format!(
        "delivery to the destination failed ({error}); the export is now '{}' after {} of {} attempts — retry the post",
        row.status, row.retries as i64, row.max_retries as i64
    ));
    p.body["current_state"] = json!(row.status);
    StoredResponse {
        status: 502,
        headers: vec![("content-type".into(), http::PROBLEM_JSON.into())],
        body: p.body.to_string().into_bytes(),
    }
}

/// The destination's reference from a 2xx answer (if it gave one), or why the
/// call failed, in the words the export's `last_error` and the 502 use.
fn destination_answer(answer: UpstreamResult) -> Result<Option<String>, String> {
    match answer {
        UpstreamResult::Answered {
            status,
            headers,
            body,
        } if (200..300).contains(&status) => Ok(external_reference(&headers, &body)),
        UpstreamResult::Answered { status, .. } => Err(format!("destination answered {status}")),
        UpstreamResult::TimedOut => Err("destination did not answer in time".into()),
        UpstreamResult::Unreachable(e) => Err(format!("destination unreachable: {e}")),
    }
}

/// The destination's reference for the delivery: `x-external-reference`, or
/// `external_reference` / `reference` / `id` in a JSON answer.
fn external_reference(headers: &[(String, String)], body: &[u8]) -> Option<String> {
    if let Some((_, v)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-external-reference"))
    {
        return Some(v.clone());
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    ["external_reference", "reference", "id"]
        .iter()
        .find_map(|k| match v.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// `POST …/rollback`: only from `posted`, reason required; the destination is
/// told first when set (a failure changes nothing and answers 502, not stored).
pub async fn rollback(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    id: &str,
    reason: &str,
    now: i64,
) -> HandlerResult {
    let before = existing_export(db, &env.scope, id).await?;
    let from = before.status;
    let to = transition(from, ExportEvent::Rollback, before.attempts())
        .map_err(|e| conflict(from, e))?;
    if let Some(url) = cfg.destination_url.as_deref() {
        let payload = json!({"action": "rollback", "export_id": before.id, "external_reference": before.external_reference, "reason": reason});
        let forward = [("content-type".to_string(), http::JSON.to_string())];
        let key = format!("{}-rollback", delivery_key(&before.id));
        let answer = upstream::call(
            cfg,
            &format!("{url}/rollback"),
            payload.to_string().as_bytes(),
            &forward,
            Some(upstream::OriginKey {
                key: &key,
                fence: None,
            }),
        )
        .await;
        if let Err(error) = destination_answer(answer) {
            return Ok(HandlerOutcome::Release {
                response: delivery_failed(&before, &error),
                writes: vec![],
            });
        }
    }
    let mut after = before.clone();
    after.status = to;
    after.version += 1.0;
    after.updated_at = now as f64;
    after.rollback_reason = Some(reason.to_owned());
    after.rolled_back_by = Some(env.caller_sub.clone());
    after.rolled_back_at = Some(now as f64);
    commit_transition(
        db,
        env,
        &before,
        &after,
        "rollback",
        json!({"reason": reason}),
        now,
    )
}
