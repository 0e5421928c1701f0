//! The review step: review (`PUT …/review`), approve (`PUT …/approve`: a first
//! and a second approval when an amount changes and the setting asks for two),
//! request changes (`PUT …/request-changes`) and reject (`PUT …/reject`). The
//! approver role is checked by the Worker.

use super::rows::{findings, ExportRow};
use super::{commit_transition, conflict, existing_export, HandlerResult};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::problem::ApiError;
use crate::staging::data::validate_export_data;
use crate::staging::diff::diff;
use crate::staging::requests::ApproveRequest;
use crate::staging::workflow::{
    changes_an_amount, second_approval_refuses, segregation_refuses, transition, ExportEvent,
    ExportState,
};
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

/// A transition whose body is a reason (reject, request changes): the audit
/// row's detail is the reason; `edit` records it, and the actor, on the row.
async fn with_reason(
    db: &D1Database,
    env: &Envelope,
    id: &str,
    event: ExportEvent,
    reason: &str,
    now: i64,
    edit: impl FnOnce(&mut ExportRow, String, String),
) -> HandlerResult {
    let actor = env.caller_sub.clone();
    let detail = json!({ "reason": reason });
    let reason = reason.to_owned();
    simple_transition(db, env, id, event, detail, now, |r| edit(r, actor, reason)).await
}

/// `PUT …/reject`.
pub async fn reject(
    db: &D1Database,
    env: &Envelope,
    id: &str,
    reason: &str,
    now: i64,
) -> HandlerResult {
    with_reason(
        db,
        env,
        id,
        ExportEvent::Reject,
        reason,
        now,
        |r, actor, reason| {
            r.rejected_by = Some(actor);
            r.rejection_reason = Some(reason);
        },
    )
    .await
}

/// `PUT …/request-changes`: the export goes back to its preparer (`prepared`),
/// with who asked, why and when. A pending first approval is withdrawn: its
/// data, approver and findings leave the export (the audit trail keeps them),
/// and the export shows the staged data's findings again.
pub async fn request_changes(
    db: &D1Database,
    env: &Envelope,
    id: &str,
    reason: &str,
    now: i64,
) -> HandlerResult {
    with_reason(
        db,
        env,
        id,
        ExportEvent::RequestChanges,
        reason,
        now,
        |r, actor, reason| {
            r.changes_requested_by = Some(actor);
            r.changes_requested_reason = Some(reason);
            r.changes_requested_at = Some(now as f64);
            // Submitted again, it is reviewed again.
            r.reviewed_by = None;
            r.review_comments = None;
            r.approved_data = None;
            r.approved_by = None;
            r.approved_at = None;
            r.change_reason = None;
            r.approval_comments = None;
            r.diff = None;
            r.validation_errors = r.staged_validation_errors.clone();
            r.validation_warnings = r.staged_validation_warnings.clone();
            r.quality_score = r.staged_quality_score;
        },
    )
    .await
}

/// The second approval of an export awaiting it: by another approver than
/// the first (and not the preparer), of the data as first approved.
async fn second_approval(
    db: &D1Database,
    env: &Envelope,
    before: super::rows::ExportRow,
    req: &ApproveRequest,
    now: i64,
) -> HandlerResult {
    let from = before.status;
    let to =
        transition(from, ExportEvent::Approve, before.attempts()).map_err(|e| conflict(from, e))?;
    let first = before.approved_by.clone().unwrap_or_default();
    if let Some(rule) = second_approval_refuses(&first, &env.caller_sub) {
        return Err(ApiError::Forbidden(format!("segregation of duties: {rule}")).into());
    }
    let pending: Option<Value> = match &before.approved_data {
        Some(text) => Some(serde_json::from_str(text).map_err(worker::Error::from)?),
        None => None,
    };
    if req.approved_data.is_some() && req.approved_data != pending {
        return Err(ApiError::Unprocessable {
            slug: "second-approval-changes-data",
            detail: "a second approval confirms the data as first approved; to change it, \
                     request changes or reject"
                .into(),
        }
        .into());
    }
    let mut after = before.clone();
    after.status = to;
    after.version += 1.0;
    after.updated_at = now as f64;
    after.second_approved_by = Some(env.caller_sub.clone());
    after.second_approved_at = Some(now as f64);
    let detail = json!({"second_approval": true, "first_approved_by": first,
        "comments": req.approval_comments});
    commit_transition(db, env, &before, &after, "approve", detail, now)
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
    if let Some(rule) =
        segregation_refuses(ExportEvent::Approve, &before.prepared_by, &env.caller_sub)
    {
        // The state is checked first: a decided export is a conflict for anyone.
        transition(from, ExportEvent::Approve, before.attempts()).map_err(|e| conflict(from, e))?;
        return Err(ApiError::Forbidden(format!("segregation of duties: {rule}")).into());
    }
    if from == ExportState::AwaitingSecondApproval {
        return second_approval(db, env, before, req, now).await;
    }
    // Stored data that does not parse is an internal error.
    let prepared: Value =
        serde_json::from_str(&before.prepared_data).map_err(worker::Error::from)?;
    let approved = req
        .approved_data
        .clone()
        .unwrap_or_else(|| prepared.clone());
    let changes = diff(&prepared, &approved);
    // With the setting on, corrections that change an amount wait for a
    // second approver.
    let event = if cfg.staging_second_approval && changes_an_amount(&changes) {
        ExportEvent::FirstApproval
    } else {
        ExportEvent::Approve
    };
    let to = transition(from, event, before.attempts()).map_err(|e| conflict(from, e))?;
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
    commit_transition(db, env, &before, &after, event.as_str(), detail, now)
}
