//! Fronting origin functions: `POST /functions/v1/{name}` is forwarded to
//! `UPSTREAM_BASE_URL/{name}` with the body, `Content-Type`, `Authorization` and
//! the `Idempotency-Key`, under the same contract as the built-in functions.

use super::HandlerOutcome;
use crate::config::Config;
use crate::http;
use crate::idempotency::{storable_headers, StoredResponse};
use crate::problem::ApiError;
use crate::upstream::{call, pass, OriginKey, Outgoing, UpstreamResult};
use wasm_bindgen::JsCast;
use worker::worker_sys::web_sys;
use worker::Response;

/// Request headers passed on to the origin.
pub const FORWARDED_HEADERS: &[&str] = &["content-type", "authorization"];

/// The origin URL for a function, if the function is configured.
pub fn upstream_url(cfg: &Config, name: &str) -> Result<String, ApiError> {
    if !cfg.upstream_functions.iter().any(|f| f == name) {
        return Err(ApiError::NotFound(format!(
            "no function named {name:?} is fronted here"
        )));
    }
    let base = cfg
        .upstream_base_url
        .as_deref()
        .ok_or(ApiError::UpstreamNotConfigured)?;
    Ok(format!("{base}/{name}"))
}

/// Runs a keyed call in the key's object: 2xx/4xx are stored, the rest is
/// not. `key` carries the derived key and the execution's fence.
pub async fn execute(
    cfg: &Config,
    url: &str,
    body: &[u8],
    forward: &[(String, String)],
    key: OriginKey<'_>,
) -> HandlerOutcome {
    match call(cfg, url, body, forward, Some(key)).await {
        UpstreamResult::Answered {
            status,
            headers,
            body,
        } => {
            let response = StoredResponse {
                status,
                headers: storable_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                body,
            };
            if response.is_storable() {
                HandlerOutcome::Commit {
                    response,
                    writes: vec![],
                    after: None,
                }
            } else {
                HandlerOutcome::transient(response)
            }
        }
        UpstreamResult::TimedOut => {
            HandlerOutcome::transient(http::problem_stored(&ApiError::UpstreamTimeout))
        }
        UpstreamResult::Unreachable(e) => {
            worker::console_error!("upstream {url} unreachable: {e}");
            HandlerOutcome::transient(http::problem_stored(&ApiError::UpstreamUnreachable))
        }
    }
}

/// `UPSTREAM_KEY_POLICY=optional` without a key: straight through, no object,
/// no D1, the answer streamed ([`crate::upstream::pass`]), finished by the
/// Worker. (A caller whose token this isolate has verified before goes by
/// `frontend_worker::quick_pass` instead, with the same call.)
pub async fn passthrough(
    cfg: &Config,
    url: &str,
    body: Outgoing<'_>,
    forward: &[(String, String)],
) -> Response {
    let answer = js_sys::futures::JsFuture::from(pass(cfg, url, body, forward, None)).await;
    match answer.and_then(|a| a.dyn_into::<web_sys::Response>()) {
        Ok(answer) => Response::from(answer),
        // `pass` never rejects: its failures are the 504/502 problems.
        Err(_) => http::problem(&ApiError::UpstreamUnreachable),
    }
}
