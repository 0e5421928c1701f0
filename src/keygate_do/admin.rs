//! The key admin routes at the key's object: a key's state, and its release.

use super::KeyGate;
use crate::envelope::Envelope;
use crate::http::{self, EXPIRES_HEADER};
use crate::idempotency::copies::Lent;
use crate::idempotency::execute::{KeyState, Released};
use crate::idempotency::gate::Releaser;
use crate::idempotency::StoredResponse;
use crate::mirror_do::MirroredRecords;
use crate::problem::ApiError;
use crate::store::D1Records;
use std::cell::RefCell;
use std::time::Duration;
use worker::{Delay, Result};

/// A release waiting on a key: no copy of its answer is lent until it ends,
/// however it ends (answered, failed, or dropped with its request).
struct Releasing<'a> {
    lent: &'a RefCell<Lent>,
    name: String,
}

impl<'a> Releasing<'a> {
    fn begin(lent: &'a RefCell<Lent>, name: String) -> Self {
        lent.borrow_mut().begin_release(&name);
        Releasing { lent, name }
    }
}

impl Drop for Releasing<'_> {
    fn drop(&mut self) {
        self.lent.borrow_mut().end_release(&self.name);
    }
}

impl KeyGate {
    pub(super) fn records<'a>(&self, db: &'a worker::D1Database) -> D1Records<'a> {
        D1Records {
            db,
            fail_commit: false,
        }
    }

    /// `GET /v1/idempotency/keys/{key}`: the key's state.
    pub(super) async fn describe(&self, env: &Envelope) -> Result<StoredResponse> {
        let db = self.env.d1(crate::config::DB_BINDING)?;
        let key = env.record_key();
        let state = self
            .gate(&key.name())
            .describe(&self.records(&db), &key)
            .await
            .map_err(worker::Error::RustError)?;
        Ok(match state {
            Some(state) => {
                let mut body = serde_json::to_value(&state)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                body["key"] = env.key.as_str().into();
                body["route"] = env.route.as_str().into();
                let expires_at = match state {
                    KeyState::Completed { expires_at, .. } => Some(expires_at),
                    KeyState::Processing { .. } => None,
                };
                if let Some(at) = expires_at {
                    // The same date the answer's `Idempotency-Expires` states.
                    body["expires"] = http::http_date(at).into();
                }
                let expires = expires_at.map(|at| at.to_string());
                let extra: Vec<(&str, &str)> = expires
                    .iter()
                    .map(|at| (EXPIRES_HEADER, at.as_str()))
                    .collect();
                http::json_stored(200, &body, &extra)
            }
            None => {
                // Asked about a key it never held (or no longer does).
                self.vacate_if_empty().await;
                http::problem_reply(&ApiError::NotFound(
                    "no live idempotency record for this key and route".into(),
                ))
            }
        })
    }

    /// `DELETE /v1/idempotency/keys/{key}`: forget the key so a retry runs again
    /// — refused while a request holds it, and to anyone but its owner or an admin.
    pub(super) async fn release_key(&self, env: &Envelope) -> Result<StoredResponse> {
        // Effective only once every copy of the answer lent to an isolate has
        // lapsed: wait for that, lending none meanwhile.
        let name = env.record_key().name();
        let at = self.lent.borrow().release_at(&name);
        let _releasing = Releasing::begin(&self.lent, name);
        let wait = at.saturating_sub(super::now_ms());
        if wait > 0 {
            Delay::from(Duration::from_millis(wait as u64)).await;
        }
        self.release_now(env).await
    }

    async fn release_now(&self, env: &Envelope) -> Result<StoredResponse> {
        let who = Releaser {
            sub: &env.caller_sub,
            admin: env.admin,
            own_scope: env.own_scope(),
        };
        let db = self.env.d1(crate::config::DB_BINDING)?;
        // Through the key's mirror: the release also drops a record waiting there.
        let records = MirroredRecords {
            d1: self.records(&db),
            env: &self.env,
        };
        let key = env.record_key();
        let released = self
            .gate(&key.name())
            .release_everywhere(&records, &key, &who, |t| self.live.contains(t))
            .await
            .map_err(worker::Error::RustError)?;
        Ok(match released {
            Released::InFlight => http::problem_reply(&ApiError::KeyInFlight {
                key: env.key.to_string(),
            }),
            Released::Forbidden => http::problem_reply(&ApiError::Forbidden(
                "only the key's owner or an admin may release it".into(),
            )),
            Released::Done { existed } => {
                self.vacate_if_empty().await;
                if existed {
                    StoredResponse {
                        status: 204,
                        headers: Vec::new(),
                        body: Vec::new(),
                    }
                } else {
                    http::problem_reply(&ApiError::NotFound(
                        "no idempotency record for this key and route".into(),
                    ))
                }
            }
        })
    }
}
