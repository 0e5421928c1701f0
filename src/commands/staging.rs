//! Export staging (handlers: `routes::staging`): stage one export or a batch,
//! then review, approve or reject, post to the accounting system, roll back.

use super::{path_param, Input, KeyedCommand, KeyedDoc, Parsed};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::problem::ApiError;
use crate::routes::staging::{self, BatchItem};
use crate::routes::HandlerResult;
use crate::staging::data::validate_export_data;
use crate::staging::requests::{
    parse_approve_request, parse_post_request, parse_reject_request, parse_request_changes_request,
    parse_review_request, parse_rollback_request, parse_stage_request, ApproveRequest, PostRequest,
    StageRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::D1Database;

/// The role that may approve or reject staged exports.
pub const APPROVER_ROLE: &str = "approver";
/// Posts approved exports to the accounting system (the approver role may too).
pub const POSTER_ROLE: &str = "poster";

/// Export data that fails validation is a 400 before anything is staged.
fn valid_data(data: &Value) -> Result<(), ApiError> {
    validate_export_data(data)
        .map(|_| ())
        .map_err(staging::data_error)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageExport(pub StageRequest);

impl KeyedCommand for StageExport {
    const TEMPLATE: &'static str = "POST /v1/staging/exports";
    const DOC: KeyedDoc = KeyedDoc::new(
        "stageExport",
        "Stage an invoice export",
        "staging",
        "StageExport",
        Some((201, "Export")),
    );

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let req = parse_stage_request(input.body, input.ctx.subject)?;
        valid_data(&req.export_data)?;
        Parsed::under_header(StageExport(req), input.header)
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        staging::stage(db, env, &self.0, now)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewExport {
    pub comments: Option<String>,
}

impl KeyedCommand for ReviewExport {
    const TEMPLATE: &'static str = "PUT /v1/staging/exports/{id}/review";
    const DOC: KeyedDoc = KeyedDoc::new(
        "reviewExport",
        "Review an export",
        "staging",
        "Review",
        Some((200, "Export")),
    )
    .body_optional();

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let comments = parse_review_request(input.body, input.ctx.subject)?;
        Parsed::under_header(ReviewExport { comments }, input.header)
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        let comments = self.comments.as_deref();
        staging::review(db, env, path_param(env), comments, now).await
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproveExport(pub ApproveRequest);

impl KeyedCommand for ApproveExport {
    const TEMPLATE: &'static str = "PUT /v1/staging/exports/{id}/approve";
    const ROLES: &'static [&'static str] = &[APPROVER_ROLE];
    const DOC: KeyedDoc = KeyedDoc::new(
        "approveExport",
        "Approve an export, optionally with corrected data (approver role)",
        "staging",
        "Approve",
        Some((200, "Export")),
    )
    .body_optional();

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let req = parse_approve_request(input.body, input.ctx.subject)?;
        if let Some(data) = &req.approved_data {
            valid_data(data)?;
        }
        Parsed::under_header(ApproveExport(req), input.header)
    }

    async fn apply(
        &self,
        db: &D1Database,
        cfg: &Config,
        env: &Envelope,
        now: i64,
    ) -> HandlerResult {
        staging::approve(db, cfg, env, path_param(env), &self.0, now).await
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectExport {
    pub reason: String,
}

impl KeyedCommand for RejectExport {
    const TEMPLATE: &'static str = "PUT /v1/staging/exports/{id}/reject";
    const ROLES: &'static [&'static str] = &[APPROVER_ROLE];
    const DOC: KeyedDoc = KeyedDoc::new(
        "rejectExport",
        "Reject an export with a reason (approver role)",
        "staging",
        "Reject",
        Some((200, "Export")),
    );

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let reason = parse_reject_request(input.body, input.ctx.subject)?;
        Parsed::under_header(RejectExport { reason }, input.header)
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        staging::reject(db, env, path_param(env), &self.reason, now).await
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestChanges {
    pub reason: String,
}

impl KeyedCommand for RequestChanges {
    const TEMPLATE: &'static str = "PUT /v1/staging/exports/{id}/request-changes";
    const ROLES: &'static [&'static str] = &[APPROVER_ROLE];
    const DOC: KeyedDoc = KeyedDoc::new(
        "requestChanges",
        "Send an export back to its preparer, with what to change (approver role)",
        "staging",
        "RequestChanges",
        Some((200, "Export")),
    );

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let reason = parse_request_changes_request(input.body, input.ctx.subject)?;
        Parsed::under_header(RequestChanges { reason }, input.header)
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        staging::request_changes(db, env, path_param(env), &self.reason, now).await
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostExport(pub PostRequest);

impl KeyedCommand for PostExport {
    const TEMPLATE: &'static str = "POST /v1/staging/exports/{id}/post";
    const ROLES: &'static [&'static str] = &[APPROVER_ROLE, POSTER_ROLE];
    const DOC: KeyedDoc = KeyedDoc::new(
        "postExport",
        "Post an approved export to the accounting system (approver or poster role; not its preparer)",
        "staging",
        "Post",
        Some((200, "Export")),
    )
    .body_optional()
    .errors(&[502]);

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let req = parse_post_request(input.body, input.ctx.subject)?;
        Parsed::under_header(PostExport(req), input.header)
    }

    async fn apply(
        &self,
        db: &D1Database,
        cfg: &Config,
        env: &Envelope,
        now: i64,
    ) -> HandlerResult {
        staging::post(db, cfg, env, path_param(env), &self.0, now).await
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackExport {
    pub reason: String,
}

impl KeyedCommand for RollbackExport {
    const TEMPLATE: &'static str = "POST /v1/staging/exports/{id}/rollback";
    const ROLES: &'static [&'static str] = &[APPROVER_ROLE];
    const DOC: KeyedDoc = KeyedDoc::new(
        "rollbackExport",
        "Roll back a posted export, with a reason (approver role)",
        "staging",
        "Rollback",
        Some((200, "Export")),
    )
    .errors(&[502]);

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let reason = parse_rollback_request(input.body, input.ctx.subject)?;
        Parsed::under_header(RollbackExport { reason }, input.header)
    }

    async fn apply(
        &self,
        db: &D1Database,
        cfg: &Config,
        env: &Envelope,
        now: i64,
    ) -> HandlerResult {
        staging::rollback(db, cfg, env, path_param(env), &self.reason, now).await
    }
}

/// The batch's items, each a valid stage request or the reason it is not (so
/// one bad item does not reject the batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageBatch(pub Vec<BatchItem>);

impl KeyedCommand for StageBatch {
    const TEMPLATE: &'static str = "POST /v1/staging/batches";
    const DOC: KeyedDoc = KeyedDoc::new(
        "stageBatch",
        "Stage many exports at once (per-item results)",
        "staging",
        "StageBatch",
        Some((201, "BatchResult")),
    );

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let max = input.ctx.cfg.staging_max_batch_size;
        let items = staging::parse_batch(input.body, max, input.ctx.subject)?;
        Parsed::under_header(StageBatch(items), input.header)
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        staging::stage_batch(db, env, &self.0, now)
    }
}
