//! What the key's object answers: the request that ran, a replay, and each
//! request that waited on the run (`Prefer: wait`). Answers as data (status,
//! headers, body) built from the run's outcome, with the contract's headers and
//! the internal outcome header the Worker reads (and strips).

use crate::envelope::{Envelope, GateOutcome};
use crate::http::{self, EXPIRES_HEADER, OUTCOME_HEADER, REPLAY_MARKS};
use crate::idempotency::execute::Executed;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use worker::console_error;

/// A finished execution, as handed to the requests waiting on it.
#[derive(Clone)]
pub(super) struct Finished {
    pub response: StoredResponse,
    /// Stored answers reach waiters as replays; a transient failure is passed as is.
    pub stored: bool,
    /// When a stored answer expires.
    pub expires_at: i64,
}

/// What the requests waiting on a run get.
pub(super) enum ForWaiters {
    Send(Finished),
    /// Nothing: they decide again (the run adopted another payload's answer).
    Redecide,
}

fn preference_applied(env: &Envelope) -> String {
    format!("wait={}", (env.wait_ms + 999) / 1000)
}

/// Marks `resp` with what the object did, for the Worker.
pub(super) fn with_outcome(mut resp: StoredResponse, outcome: GateOutcome) -> StoredResponse {
    http::set_header(&mut resp.headers, OUTCOME_HEADER, outcome.as_str());
    resp
}

/// A stored answer sent again; `waited` if the request waited for it.
pub(super) fn replay(
    env: &Envelope,
    resp: StoredResponse,
    waited: bool,
    expires_at: i64,
) -> StoredResponse {
    let applied = preference_applied(env);
    let expires = expires_at.to_string();
    let mut extra: Vec<(&str, &str)> = REPLAY_MARKS.to_vec();
    extra.push(("idempotency-key", env.key.as_str()));
    extra.push((EXPIRES_HEADER, &expires));
    if waited {
        extra.push(("preference-applied", &applied));
    }
    with_outcome(http::stored_with(resp, &extra), GateOutcome::Replayed)
}

/// The answer of a request that waited on a run.
pub(super) fn to_waiter(env: &Envelope, finished: Finished) -> StoredResponse {
    if finished.stored {
        return replay(env, finished.response, true, finished.expires_at);
    }
    let applied = preference_applied(env);
    with_outcome(
        http::stored_with(
            finished.response,
            &[
                ("idempotency-key", env.key.as_str()),
                ("preference-applied", &applied),
            ],
        ),
        GateOutcome::Failed,
    )
}

/// The answer to the request that ran, and what its waiters get.
pub(super) fn of_run<A>(env: &Envelope, executed: Executed<A>) -> (StoredResponse, ForWaiters) {
    let transient = |response: StoredResponse| {
        let answer = with_outcome(
            http::stored_with(response.clone(), &[("idempotency-key", env.key.as_str())]),
            GateOutcome::Failed,
        );
        let finished = Finished {
            response,
            stored: false,
            expires_at: 0,
        };
        (answer, ForWaiters::Send(finished))
    };
    match executed {
        Executed::Stored {
            response,
            expires_at,
            ..
        } => {
            let expires = expires_at.to_string();
            let answer = with_outcome(
                http::stored_with(
                    response.clone(),
                    &[
                        ("idempotency-key", env.key.as_str()),
                        (EXPIRES_HEADER, &expires),
                    ],
                ),
                GateOutcome::Executed,
            );
            let finished = Finished {
                response,
                stored: true,
                expires_at,
            };
            (answer, ForWaiters::Send(finished))
        }
        Executed::Adopted(c) if c.fingerprint != env.fingerprint_str() => {
            let answer = with_outcome(
                http::problem_reply(&ApiError::KeyReused {
                    key: env.key.to_string(),
                }),
                GateOutcome::Mismatch,
            );
            (answer, ForWaiters::Redecide)
        }
        Executed::Adopted(c) => {
            let answer = replay(env, c.response.clone(), false, c.expires_at);
            let finished = Finished {
                response: c.response,
                stored: true,
                expires_at: c.expires_at,
            };
            (answer, ForWaiters::Send(finished))
        }
        Executed::Released(response) => transient(response),
        Executed::Threw(e) => {
            console_error!("handler {} failed: {e}", env.route);
            transient(http::problem_stored(&ApiError::Internal))
        }
        Executed::Failed(e) => {
            console_error!("storage failure for {}: {e}", env.route);
            transient(http::problem_reply(&ApiError::StorageUnavailable))
        }
    }
}
