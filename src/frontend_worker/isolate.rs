//! What the Worker's isolate keeps for the life of the isolate — its
//! configuration, its auth rules, the tokens it has verified, the JWKS keys it
//! has fetched, a test hook's count — and the result every route answers with. A leaf: the other files of
//! the Worker use it; it uses none of them.

use crate::auth::{self, jwks, Resolved};
use crate::commands::Endpoint;
use crate::config::{self, Config, AUTH_SECRET_VAR};
use crate::idempotency::copies;
use crate::problem::ApiError;
use js_sys::futures::JsFuture;
use std::rc::Rc;
use worker::{console_error, Date, Env, Response};

/// What a route answers: a response, or the problem to answer with.
pub(super) type Outcome = std::result::Result<Response, ApiError>;

/// The isolate's configuration (see [`config::cached`]). Settings that do not
/// parse refuse every request: 500 naming the variables, the reasons logged.
pub(super) fn config(env: &Env) -> std::result::Result<std::rc::Rc<Config>, ApiError> {
    config::cached(
        |n| env.var(n).ok().map(|v| v.to_string()),
        &Endpoint::ALL.map(Endpoint::template),
    )
    .map_err(|e| {
        console_error!("configuration refused, answering 500: {e}");
        ApiError::Misconfigured {
            vars: e.vars().into_iter().map(String::from).collect(),
        }
    })
}

pub(super) fn storage(e: worker::Error) -> ApiError {
    console_error!("storage error: {e}");
    ApiError::StorageUnavailable
}

thread_local! {
    /// How tokens are verified — `AUTH_JWT_SECRET` and the settings — read
    /// once: like the configuration, fixed for the isolate's life (a new
    /// secret is a new deployment, so new isolates).
    static RULES: std::cell::OnceCell<Rc<auth::Rules>> = const { std::cell::OnceCell::new() };
    /// Tokens this isolate has verified (see [`auth::VerifiedTokens`]).
    static TOKENS: std::cell::RefCell<auth::VerifiedTokens> =
        std::cell::RefCell::new(auth::VerifiedTokens::default());
    /// The keys of `AUTH_JWKS_URL` this isolate has fetched (see [`jwks::KeyCache`]).
    static KEYS: std::cell::RefCell<jwks::KeyCache> =
        std::cell::RefCell::new(jwks::KeyCache::default());
    /// Copies of replays the key objects lent (see [`copies::IsolateCopies`]).
    static COPIES: std::cell::RefCell<copies::IsolateCopies<crate::raw_fetch::Answer>> =
        std::cell::RefCell::new(copies::IsolateCopies::default());
    /// Replays answered from a copy (read by a test hook).
    static COPIES_USED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Passthroughs answered by the quick passthrough (read by a test hook).
    static QUICK_PASSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How long a JWKS fetch may take.
const JWKS_TIMEOUT_MS: f64 = 5_000.0;

/// The rules tokens are verified under, from the configuration and the secret.
fn rules(cfg: &Config, env: &Env) -> auth::Rules {
    let secret = env
        .secret(AUTH_SECRET_VAR)
        .map(|s| s.to_string())
        .or_else(|_| env.var(AUTH_SECRET_VAR).map(|v| v.to_string()))
        .unwrap_or_default();
    auth::Rules {
        secret: (!secret.is_empty()).then(|| secret.into_bytes()),
        jwks: cfg.auth_jwks_url.is_some(),
        checks: auth::ClaimChecks {
            issuer: cfg.auth_jwt_issuer.clone(),
            audience: cfg.auth_jwt_audience.clone(),
        },
        claims: cfg.auth_claims.clone(),
    }
}

/// Now, in seconds since the epoch, as a token's `exp` and `nbf` count.
fn now_secs() -> f64 {
    Date::now().as_millis() as f64 / 1000.0
}

/// The request's credentials: its `Authorization` and
/// `Cf-Access-Jwt-Assertion` headers ([`auth::credential`]).
pub(super) struct Credentials {
    pub authorization: Option<String>,
    pub access: Option<String>,
}

/// The request's caller: the one resolution both paths use
/// ([`auth::VerifiedTokens::resolve`]). With `env` (the guarded path) the
/// rules are read if this isolate has not read them yet, and a token not seen
/// before is verified — a JWKS token's signature with the key of its `kid`
/// ([`jwks_signature`]); without it (the quick passthrough) only a token
/// verified before resolves, and the future is ready at once (nothing is
/// awaited). `Err`: no secret and no JWKS are configured, or the token's key
/// is not held and the JWKS cannot be fetched (503).
pub(super) async fn resolve_caller(
    credentials: &Credentials,
    cfg: &Config,
    env: Option<&Env>,
) -> std::result::Result<Resolved, ApiError> {
    let now = now_secs();
    let rules = RULES.with(|r| match env {
        Some(env) => Some(r.get_or_init(|| Rc::new(rules(cfg, env))).clone()),
        None => r.get().cloned(),
    });
    let Some(rules) = rules.filter(|r| r.configured()) else {
        return Err(ApiError::AuthNotConfigured);
    };
    let (authorization, access) = (
        credentials.authorization.as_deref(),
        credentials.access.as_deref(),
    );
    let resolved = TOKENS.with(|t| {
        t.borrow_mut()
            .resolve(authorization, access, &rules, now, env.is_some())
    });
    let Resolved::Verify(pending) = resolved else {
        return Ok(resolved);
    };
    let url = cfg.auth_jwks_url.as_deref().unwrap_or_default();
    let signature = jwks_signature(&pending, url).await?;
    Ok(TOKENS.with(|t| t.borrow_mut().complete(*pending, signature, now_secs())))
}

/// Checks a token's signature with the JWKS key of its `kid`, fetching the
/// JWKS when [`jwks::KeyCache::lookup`] says so.
async fn jwks_signature(
    pending: &auth::Pending,
    url: &str,
) -> std::result::Result<std::result::Result<(), auth::AuthError>, ApiError> {
    // A fetch is followed by one more lookup, which never asks for another.
    for _ in 0..3 {
        let lookup = KEYS.with(|k| {
            k.borrow()
                .lookup(&pending.kid, pending.alg, Date::now().as_millis() as f64)
        });
        match lookup {
            jwks::Lookup::Use(key) => {
                let verified = crate::js::jwk_verify(
                    &key.jwk,
                    key.alg.import_params(),
                    key.alg.verify_params(),
                    &pending.signature,
                    pending.signing_input.as_bytes(),
                );
                let verified = JsFuture::from(verified)
                    .await
                    .ok()
                    .and_then(|v| v.as_bool());
                return Ok(match verified {
                    Some(true) => Ok(()),
                    _ => Err(auth::AuthError::BadSignature),
                });
            }
            jwks::Lookup::Fetch => {
                let answer = JsFuture::from(crate::js::jwks_fetch(url, JWKS_TIMEOUT_MS))
                    .await
                    .ok()
                    .and_then(|a| a.as_string())
                    .unwrap_or_default();
                let answer = match answer.split_once('\n') {
                    Some(("ok", rest)) => {
                        let (cache_control, body) = rest.split_once('\n').unwrap_or((rest, ""));
                        Ok((
                            Some(cache_control).filter(|c| !c.is_empty()),
                            body.as_bytes(),
                        ))
                    }
                    Some((_, why)) => Err(why.to_string()),
                    None => Err("the fetch did not answer".to_string()),
                };
                let now = Date::now().as_millis() as f64;
                // Only a failure is logged: REQUEST_LOG=off leaves errors alone.
                if let Err(why) = KEYS.with(|k| k.borrow_mut().fetched(now, answer)) {
                    console_error!("JWKS not fetched from {url}: {why}");
                }
            }
            jwks::Lookup::Unknown => {
                return Ok(Err(auth::AuthError::UnknownKey(pending.kid.clone())))
            }
            jwks::Lookup::WrongAlg(key) => {
                return Ok(Err(auth::AuthError::KeyAlgMismatch {
                    kid: pending.kid.clone(),
                    key,
                }))
            }
            jwks::Lookup::Unavailable { retry_after_secs } => {
                return Err(ApiError::AuthKeysUnavailable {
                    retry_after: retry_after_secs,
                })
            }
        }
    }
    Err(ApiError::AuthKeysUnavailable { retry_after: 1 })
}

/// Counts a passthrough answered by the quick passthrough.
pub(super) fn count_quick_pass() {
    QUICK_PASSES.with(|n| n.set(n.get() + 1));
}

/// How many passthroughs this wasm instance answered by the quick passthrough.
pub(super) fn quick_passes() -> u64 {
    QUICK_PASSES.with(|n| n.get())
}

/// The copy of a replay that answers `key` now, if this isolate holds one.
pub(super) fn copy_of(key: &copies::CopyKey) -> Option<crate::raw_fetch::Answer> {
    let copy = COPIES.with(|c| c.borrow_mut().lookup(key, Date::now().as_millis() as f64));
    if copy.is_some() {
        COPIES_USED.with(|n| n.set(n.get() + 1));
    }
    copy
}

/// Keeps a copy of a replay the object lent for `lent_ms`, called at `sent_at`
/// (an answer's size is its body's and its headers'; a large one is not
/// copied at all).
pub(super) fn keep_copy(
    key: copies::CopyKey,
    answer: &crate::raw_fetch::Answer,
    sent_at: f64,
    lent_ms: i64,
) {
    let headers: usize = answer.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    let bytes = answer.body.len() + headers;
    if bytes <= copies::COPY_MAX_BYTES {
        let answer = answer.clone();
        COPIES.with(|c| c.borrow_mut().keep(key, answer, bytes, sent_at, lent_ms));
    }
}

/// How many replays this wasm instance answered from a copy.
pub(super) fn copies_used() -> u64 {
    COPIES_USED.with(|n| n.get())
}
