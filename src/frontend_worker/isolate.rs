//! What the Worker's isolate keeps for the life of the isolate — its
//! configuration, its auth secret, the tokens it has verified, a test hook's
//! count — and the result every route answers with. A leaf: the other files of
//! the Worker use it; it uses none of them.

use crate::auth::{self, Resolved};
use crate::commands::Endpoint;
use crate::config::{self, Config, AUTH_SECRET_VAR};
use crate::problem::ApiError;
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
    /// `AUTH_JWT_SECRET`, read once: like the configuration, fixed for the
    /// isolate's life (a new secret is a new deployment, so new isolates).
    static SECRET: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    /// Tokens this isolate has verified (see [`auth::VerifiedTokens`]).
    static TOKENS: std::cell::RefCell<auth::VerifiedTokens> =
        std::cell::RefCell::new(auth::VerifiedTokens::default());
    /// Passthroughs answered by the quick passthrough (read by a test hook).
    static QUICK_PASSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The claims a token must carry (`AUTH_JWT_ISSUER`, `AUTH_JWT_AUDIENCE`).
fn claim_checks(cfg: &Config) -> auth::ClaimChecks {
    auth::ClaimChecks {
        issuer: cfg.auth_jwt_issuer.clone(),
        audience: cfg.auth_jwt_audience.clone(),
    }
}

/// Now, in seconds since the epoch, as a token's `exp` and `nbf` count.
fn now_secs() -> f64 {
    Date::now().as_millis() as f64 / 1000.0
}

/// The request's caller: the one resolution both paths use
/// ([`auth::VerifiedTokens::resolve`]). With `env` (the guarded path) the
/// secret is read if this isolate has not read it yet, and a token not seen
/// before is verified; without it (the quick passthrough) only a token
/// verified before resolves. `Err`: no secret is configured (503).
pub(super) fn resolve_caller(
    authorization: Option<&str>,
    cfg: &Config,
    env: Option<&Env>,
) -> std::result::Result<Resolved, ApiError> {
    let checks = claim_checks(cfg);
    let now = now_secs();
    SECRET.with(|secret| {
        let secret = match env {
            Some(env) => secret.get_or_init(|| {
                env.secret(AUTH_SECRET_VAR)
                    .map(|s| s.to_string())
                    .or_else(|_| env.var(AUTH_SECRET_VAR).map(|v| v.to_string()))
                    .unwrap_or_default()
            }),
            None => secret.get().map_or("", String::as_str),
        };
        if secret.is_empty() {
            return Err(ApiError::AuthNotConfigured);
        }
        Ok(TOKENS.with(|t| {
            t.borrow_mut().resolve(
                authorization,
                secret.as_bytes(),
                now,
                &checks,
                env.is_some(),
            )
        }))
    })
}

/// Counts a passthrough answered by the quick passthrough.
pub(super) fn count_quick_pass() {
    QUICK_PASSES.with(|n| n.set(n.get() + 1));
}

/// How many passthroughs this wasm instance answered by the quick passthrough.
pub(super) fn quick_passes() -> u64 {
    QUICK_PASSES.with(|n| n.get())
}
