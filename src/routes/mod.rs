//! The functions behind idemgate. Each keyed route has a validation step (run by
//! the Worker before any idempotency work: an invalid request is not stored and
//! does not use up its key) and an execution step (run by the key's Durable Object
//! under the lease) that returns its answer and the D1 writes to commit together
//! with the idempotency record.

pub mod documents;
pub mod functions;
pub mod staging;
pub mod training;

use crate::config::{
    Config, ROUTE_DOCUMENTS, ROUTE_EXPORT_APPROVE, ROUTE_EXPORT_POST, ROUTE_EXPORT_REJECT,
    ROUTE_EXPORT_REVIEW, ROUTE_EXPORT_ROLLBACK, ROUTE_FUNCTION, ROUTE_JOB_CANCEL, ROUTE_JOB_EVENTS,
    ROUTE_STAGE_EXPORT, ROUTE_STAGING_BATCH, ROUTE_TRAINING_DATA, ROUTE_TRAINING_JOBS,
};
use crate::envelope::Envelope;
use crate::idempotency::execute::Outcome;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use worker::{D1Database, D1PreparedStatement, Result};

/// Maps a request parsing error to a 400 that names the field.
pub fn request_error(e: crate::training::RequestError) -> ApiError {
    use crate::training::RequestError as E;
    let slug = match e {
        E::InvalidJson(_) => "invalid-json",
        E::UnknownField(_) => "unknown-field",
        E::MissingField(_) | E::InvalidField { .. } => "invalid-field",
    };
    ApiError::bad_request(slug, e.to_string())
}

/// The parsed request body, or — returned from the enclosing handler — its 400.
macro_rules! parsed_or_400 {
    ($parsed:expr) => {
        match $parsed {
            Ok(v) => v,
            Err(e) => {
                return Ok($crate::routes::HandlerOutcome::problem(
                    &$crate::routes::request_error(e),
                ))
            }
        }
    };
}
pub(crate) use parsed_or_400;

/// What a handler produced (see [`Outcome`]): its answer, its D1 statements, and
/// work to do once after the commit.
pub type HandlerOutcome = Outcome<Vec<D1PreparedStatement>, AfterCommit>;

impl HandlerOutcome {
    /// A final answer with no rows of its own.
    pub fn answer(response: StoredResponse) -> Self {
        HandlerOutcome::Commit {
            response,
            writes: vec![],
            after: None,
        }
    }

    /// A transient failure with nothing to write.
    pub fn transient(response: StoredResponse) -> Self {
        HandlerOutcome::Release {
            response,
            writes: vec![],
        }
    }

    /// A 4xx problem from the handler: stored and replayed like any final answer.
    pub fn problem(err: &ApiError) -> Self {
        Self::answer(crate::http::problem_stored(err))
    }
}

/// Side effects after a commit.
pub enum AfterCommit {
    /// Send a new training job to `TRAINER_URL`.
    DispatchJob { job_id: String },
}

/// Runs the handler for `env.template`. An `Err` counts as a throw: 500, released.
pub async fn execute(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    body: &[u8],
    now: i64,
) -> Result<HandlerOutcome> {
    if env.test_fail.as_deref() == Some("handler") {
        return Err(worker::Error::RustError(
            "simulated handler failure (test hook)".into(),
        ));
    }
    if env.test_fail.as_deref() == Some("panic") {
        // Test hook: a Rust panic inside the handler, under the lease (issue 9).
        panic!("simulated handler panic (test hook)");
    }
    let param = || env.param.clone().unwrap_or_default();
    match env.template.as_str() {
        ROUTE_DOCUMENTS => documents::execute(db, cfg, env, body, now),
        ROUTE_TRAINING_DATA => training::create_dataset(db, env, body, now).await,
        ROUTE_TRAINING_JOBS => training::create_job(db, cfg, env, body, now).await,
        ROUTE_JOB_EVENTS => training::job_event(db, env, &param(), body, now).await,
        ROUTE_JOB_CANCEL => training::cancel_job(db, env, &param(), body, now).await,
        ROUTE_STAGE_EXPORT => staging::stage(db, env, body, now),
        ROUTE_EXPORT_REVIEW => staging::review(db, env, &param(), body, now).await,
        ROUTE_EXPORT_APPROVE => staging::approve(db, cfg, env, &param(), body, now).await,
        ROUTE_EXPORT_REJECT => staging::reject(db, env, &param(), body, now).await,
        ROUTE_EXPORT_POST => staging::post(db, cfg, env, &param(), now).await,
        ROUTE_EXPORT_ROLLBACK => staging::rollback(db, cfg, env, &param(), body, now).await,
        ROUTE_STAGING_BATCH => staging::stage_batch(db, cfg, env, body, now),
        ROUTE_FUNCTION => {
            let url = match functions::upstream_url(cfg, &param()) {
                Ok(u) => u,
                Err(e) => return Ok(HandlerOutcome::transient(crate::http::problem_stored(&e))),
            };
            Ok(functions::execute(cfg, &url, body, &env.forward, &env.forwarded_key()).await)
        }
        other => Err(worker::Error::RustError(format!(
            "no handler for route {other}"
        ))),
    }
}

/// Runs an [`AfterCommit`]; failures are recorded on the rows, never raised.
pub async fn after_commit(db: &D1Database, cfg: &Config, after: AfterCommit) {
    match after {
        AfterCommit::DispatchJob { job_id } => training::dispatch_job(db, cfg, &job_id).await,
    }
}
