//! The export staging workflow over D1: stage, review, approve, reject, post,
//! rollback, batches, reads, and the approval-timeout sweep. The rules (validation,
//! quality, state machine, diff, rendering, request shapes) are in
//! [`crate::staging`]; this module reads rows, applies them, and writes each state
//! change together with its audit row.
//!
//! - [`rows`]: the stored export, its columns declared once, its public view;
//! - [`writes`]: the INSERT, the versioned UPDATE and the audit row;
//! - [`stage`], [`approval`], [`delivery`]: the keyed handlers (stage and batch;
//!   review, approve, reject; post and rollback);
//! - [`reads`]: the GET handlers; [`sweep`]: the approval-timeout expiry.

mod approval;
mod delivery;
mod reads;
mod rows;
mod stage;
mod sweep;
mod writes;

pub use approval::{approve, reject, request_changes, review};
pub use delivery::{delivery_key, post, rollback};
pub use reads::{check, get, get_audit, get_batch, get_diff, get_file, list};
pub use stage::{parse_batch, stage, stage_batch, BatchItem};
pub use sweep::expire_approvals;

pub use reads::get_preview;

use super::{HandlerError, HandlerOutcome, HandlerResult};
use crate::envelope::Envelope;
use crate::http;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use crate::staging::data::DataError;
use crate::staging::workflow::ExportState;
use rows::ExportRow;
use serde_json::Value;
use worker::D1Database;
use writes::{transition_writes, Audit};

/// Export data that fails validation: 400 naming the field, or 413 when too large.
pub fn data_error(e: DataError) -> ApiError {
    let slug = match e {
        DataError::UnknownField(_) => "unknown-field",
        DataError::TooLarge { .. } => return ApiError::DataTooLarge(e.to_string()),
        _ => "invalid-field",
    };
    ApiError::bad_request(slug, e.to_string())
}

/// Export data that fails validation, returned from a handler with `?`: its
/// [`data_error`] answer.
impl From<DataError> for HandlerError {
    fn from(e: DataError) -> Self {
        HandlerError::Client(data_error(e))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("export {id} not found"))
}

/// The tenant's export `id` as a keyed handler needs it: 404 if there is none.
async fn existing_export(
    db: &D1Database,
    tenant: &str,
    id: &str,
) -> std::result::Result<ExportRow, HandlerError> {
    Ok(rows::load_export(db, tenant, id)
        .await?
        .ok_or_else(|| not_found(id))?)
}

/// 409: the export's state does not allow the transition.
fn conflict(from: ExportState, e: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidTransition {
        detail: e.to_string(),
        current_state: from.as_str().into(),
    }
}

/// The export's public view as a stored answer, with its `location` if asked.
fn ok_export(status: u16, row: &ExportRow, location: bool) -> StoredResponse {
    let loc = format!("/v1/staging/exports/{}", row.id);
    let extra: Vec<(&str, &str)> = if location {
        vec![("location", &loc)]
    } else {
        vec![]
    };
    http::json_stored(status, &row.to_json(), &extra)
}

/// Commits `before` → `after` with its audit row and answers with the export.
fn commit_transition(
    db: &D1Database,
    env: &Envelope,
    before: &ExportRow,
    after: &ExportRow,
    event: &str,
    detail: Value,
    now: i64,
) -> HandlerResult {
    let audit = Audit {
        actor: &env.caller_sub,
        event,
        before: Some(before),
        after,
        detail,
        key: Some(env.key.as_str()),
        now,
    };
    let writes = transition_writes(db, before, after, &audit)?;
    Ok(HandlerOutcome::Commit {
        response: ok_export(200, after, false),
        writes,
        after: None,
    })
}
