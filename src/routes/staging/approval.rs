//! The review step: review (`PUT …/review`), approve (`PUT …/approve`) and reject
//! (`PUT …/reject`). The approver role is checked by the Worker.

use super::rows::{findings, ExportRow};
use super::{commit_transition, conflict, existing_export, HandlerResult};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::problem::ApiError;
use crate::staging::data::validate_export_data;
use crate::staging::diff::diff;
use crate::staging::requests::ApproveRequest;
use crate::staging::workflow::{segregation_refuses, transition, ExportEvent};
use serde_json::{json, Value};
use worker::D1Database;

/// Applies a simple transition (review, reject) whose changes `edit` makes.
async fn simple_transition(
    db: &D1Database,
    env: &Envelope,
    id: &str,
    event: ExportEvent,
    detail: Value,
    now: i64,
    edit: impl FnOnce(&mut ExportRow),
) -> HandlerResult {
    let before = existing_export(db, &env.scope, id).await?;
    let from = before.status;
    let to = transition(from, event, before.attempts()).map_err(|e| conflict(from, e))?;
    let mut after = before.clone();
    after.status = to;
    after.version += 1.0;
    after.updated_at = now as f64;
    edit(&mut after);
    commit_transition(db, env, &before, &after, event.as_str(), detail, now)
}

/// `PUT …/review`.
pub async fn review(
    db: &D1Database,
    env: &Envelope,
    id: &str,
    comments: Option<&str>,
    now: i64,
) -> HandlerResult {
    let comments = comments.map(str::to_owned);
    let actor = env.caller_sub.clone();
    simple_transition(
        db,
        env,
        id,
        ExportEvent::Review,
        json!({"comments": comments}),
        now,
        |r| {
            r.reviewed_by = Some(actor);
            r.review_comments = comments.clone();
        },
    )
    .await
}

/// `PUT …/reject`.
pub async fn reject(
    db: &D1Database,
    env: &Envelope,
    id: &str,
    reason: &str,
    now: i64,
) -> HandlerResult {
    let reason = reason.to_owned();
    let actor = env.caller_sub.clone();
    simple_transition(
        db,
        env,
        id,
        ExportEvent::Reject,
        json!({"reason": reason}),
        now,
        |r| {
            r.rejected_by = Some(actor);
            r.rejection_reason = Some(reason.clone());
        },
    )
    .await
}

/// `PUT …/approve`. Refused when the approver prepared the export (segregation
/// of duties), when the data changes without a `change_reason`, or when the
/// approved data scores below the threshold.
pub async fn approve(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    id: &str,
    req: &ApproveRequest,
    now: i64,
) -> HandlerResult {
    let before = existing_export(db, &env.scope, id).await?;
    let from = before.status;
    let to =
        transition(from, ExportEvent::Approve, before.attempts()).map_err(|e| conflict(from, e))?;
    if let Some(rule) =
        segregation_refuses(ExportEvent::Approve, &before.prepared_by, &env.caller_sub)
    {
        return Err(ApiError::Forbidden(format!("segregation of duties: {rule}")).into());
    }
    // Stored data that does not parse is an internal error.
    let prepared: Value =
        serde_json::from_str(&before.prepared_data).map_err(worker::Error::from)?;
    let approved = req
        .approved_data
        .clone()
        .unwrap_or_else(|| prepared.clone());
    let changes = diff(&prepared, &approved);
    if !changes.is_empty() && req.change_reason.is_none() {
        return Err(ApiError::Unprocessable {
            slug: "change-reason-required",
            detail: format!(
                "approved_data changes {} field(s); change_reason is required",
                changes.len()
            ),
        }
        .into());
    }
    let validation = validate_export_data(&approved)?;
    if validation.quality_score < cfg.staging_quality_threshold {
        let codes: Vec<String> = validation
            .errors
            .iter()
            .map(|f| format!("{} ({})", f.field, f.code))
            .collect();
        return Err(ApiError::Unprocessable {
            slug: "quality-below-threshold",
            detail: format!(
                "quality score {} is below the threshold {}; errors: {}",
                validation.quality_score,
                cfg.staging_quality_threshold,
                if codes.is_empty() {
                    "none".into()
                } else {
                    codes.join(", ")
                }
            ),
        }
        .into());
    }
    let (errors, warnings) = findings(&validation);
    let mut after = before.clone();
    after.status = to;
    after.version += 1.0;
    after.updated_at = now as f64;
    after.approved_data = Some(approved.to_string());
    after.approved_by = Some(env.caller_sub.clone());
    after.approved_at = Some(now as f64);
    after.change_reason = req.change_reason.clone();
    after.approval_comments = req.approval_comments.clone();
    after.diff = Some(serde_json::to_string(&changes).unwrap_or_else(|_| "[]".into()));
    after.validation_errors = errors;
    after.validation_warnings = warnings;
    after.quality_score = validation.quality_score as f64;
    let detail = json!({"change_reason": req.change_reason, "comments": req.approval_comments, "changes": changes.len()});
    commit_transition(db, env, &before, &after, "approve", detail, now)
}
