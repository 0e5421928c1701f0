//! The functions behind idemgate. Each keyed route has a pure validation step
//! (run by the Worker before any idempotency work) and an execution step (run by
//! the key's Durable Object under the lease) that returns its answer and the D1
//! writes to commit together with the idempotency record.

pub mod documents;

use crate::config::{Config, ROUTE_DOCUMENTS};
use crate::idempotency::StoredResponse;
use crate::keygate_do::Envelope;
use worker::{D1Database, D1PreparedStatement, Result};

/// What a handler produced.
pub enum HandlerOutcome {
    /// A final answer (2xx/4xx) and the domain rows that go with it; both are
    /// committed in one D1 batch with the idempotency record.
    Commit {
        response: StoredResponse,
        writes: Vec<D1PreparedStatement>,
    },
    /// A transient failure (5xx): nothing is written and the key is released.
    Transient(StoredResponse),
}

/// Runs the handler for `env.route`. An `Err` counts as a throw: 500, released.
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
    match env.route.as_str() {
        ROUTE_DOCUMENTS => documents::execute(db, cfg, env, body, now),
        other => Err(worker::Error::RustError(format!(
            "no handler for route {other}"
        ))),
    }
}
