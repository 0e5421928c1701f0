//! The functions behind idemgate. Each keyed route has a validation step (run by
//! the Worker before any idempotency work: an invalid request is not stored and
//! does not use up its key) and an execution step (run by the key's Durable Object
//! under the lease) that returns its answer and the D1 writes to commit together
//! with the idempotency record.

pub mod documents;
pub mod functions;
pub mod staging;
pub mod training;

use crate::config::Config;
use crate::idempotency::execute::Outcome;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use worker::{D1Database, D1PreparedStatement};

/// Maps a request parsing error to a 400 that names the field.
pub fn request_error(e: crate::request_body::RequestError) -> ApiError {
    use crate::request_body::RequestError as E;
    let slug = match e {
        E::InvalidJson(_) => "invalid-json",
        E::UnknownField(_) => "unknown-field",
        E::MissingField(_) | E::InvalidField { .. } => "invalid-field",
        E::NotTheCaller(_) => "identity-from-token",
    };
    ApiError::bad_request(slug, e.to_string())
}

/// A request body that does not parse, where a 400 is the answer (the
/// Worker's parsing): `?` converts it.
impl From<crate::request_body::RequestError> for ApiError {
    fn from(e: crate::request_body::RequestError) -> Self {
        request_error(e)
    }
}

/// A handler's failure, converted with `?`: a client error is a final 4xx answer
/// (stored and replayed like any other); an internal one is a throw (500, the
/// key released so a retry runs again).
#[derive(Debug)]
pub enum HandlerError {
    Client(ApiError),
    Internal(worker::Error),
}

impl From<ApiError> for HandlerError {
    fn from(e: ApiError) -> Self {
        HandlerError::Client(e)
    }
}

impl From<worker::Error> for HandlerError {
    fn from(e: worker::Error) -> Self {
        HandlerError::Internal(e)
    }
}

/// A request body that does not parse: 400 naming the field.
impl From<crate::request_body::RequestError> for HandlerError {
    fn from(e: crate::request_body::RequestError) -> Self {
        HandlerError::Client(request_error(e))
    }
}

/// What every handler returns.
pub type HandlerResult = Result<HandlerOutcome, HandlerError>;

/// A handler's result as the object runs it: a client error becomes its stored
/// 4xx answer, an internal one stays an error (a throw).
pub fn settle<E: Into<HandlerError>>(
    result: Result<HandlerOutcome, E>,
) -> worker::Result<HandlerOutcome> {
    match result.map_err(Into::into) {
        Ok(outcome) => Ok(outcome),
        Err(HandlerError::Client(e)) => Ok(HandlerOutcome::problem(&e)),
        Err(HandlerError::Internal(e)) => Err(e),
    }
}

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

/// Runs an [`AfterCommit`]; failures are recorded on the rows, never raised.
pub async fn after_commit(db: &D1Database, cfg: &Config, after: AfterCommit) {
    match after {
        AfterCommit::DispatchJob { job_id } => training::dispatch_job(db, cfg, &job_id).await,
    }
}
