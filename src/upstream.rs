//! The one outbound HTTP call: an origin function, the trainer (`TRAINER_URL`)
//! or the accounting destination (`DESTINATION_URL`), each bounded by
//! `UPSTREAM_TIMEOUT_MS` (the fetch is aborted when it runs out).

use crate::config::Config;
use crate::problem::ApiError;
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::web_sys;
use worker::Headers;

/// Hop-by-hop headers never copied from the origin's answer.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// What the origin did.
pub enum UpstreamResult {
    Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    TimedOut,
    Unreachable(String),
}

/// The request header carrying an execution's fence to the origin.
pub const FENCE_HEADER: &str = "idempotency-fence";

/// The idempotency headers of a keyed call to an origin: the key derived for
/// it and, for an execution the key's object admitted, its fence (a number
/// above every earlier execution's of that key).
#[derive(Debug, Clone, Copy)]
pub struct OriginKey<'a> {
    pub key: &'a str,
    pub fence: Option<i64>,
}

/// POSTs `body` once and reads the whole answer; `UPSTREAM_TIMEOUT_MS` bounds
/// both (see [`send`]).
pub async fn call(
    cfg: &Config,
    url: &str,
    body: &[u8],
    forward: &[(String, String)],
    key: Option<OriginKey<'_>>,
) -> UpstreamResult {
    let answered = async {
        let answer = send(cfg, url, body, forward, key).await?;
        let body = crate::raw_fetch::body_of(&answer).await?;
        let headers: Vec<(String, String)> = Headers(answer.headers())
            .entries()
            .filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()))
            .collect();
        Ok::<_, JsValue>((answer.status(), headers, body))
    };
    match answered.await {
        Ok((status, headers, body)) if relayable(status) => UpstreamResult::Answered {
            status,
            headers,
            body,
        },
        Ok((status, ..)) => UpstreamResult::Unreachable(format!(
            "it answered status {status}, which no answer can carry"
        )),
        Err(e) if is_timeout(&e) => UpstreamResult::TimedOut,
        Err(e) => UpstreamResult::Unreachable(message(e)),
    }
}

/// Whether an origin's status can be an answer's: a final status, 200-599 (the
/// runtime's `Response` refuses any other, and 1xx is never final). Any other is
/// a bad gateway (502); `pass_through` (src/js/glue.js) answers a passthrough's
/// the same way, when the runtime refuses to build its `Response`.
pub fn relayable(status: u16) -> bool {
    (200..=599).contains(&status)
}

/// A passthrough's request body: the bytes read, or the request's own stream
/// (none for an empty body).
pub enum Outgoing<'a> {
    Bytes(&'a [u8]),
    Stream(Option<web_sys::ReadableStream>),
}

/// How a passthrough's answer ends: by the Worker (none), or settled where it
/// is made (`Finish`, the quick passthrough of `frontend_worker`) — with the
/// `worker` phase since `started_ms`, the request id, and `logged` called
/// with the status and the `Server-Timing` once it is answered.
pub struct Finish<'a> {
    pub request_id: &'a str,
    pub started_ms: f64,
    pub logged: Option<JsValue>,
}

/// POSTs a passthrough once (`UPSTREAM_KEY_POLICY=optional`, no key): nothing
/// is stored, so the answer's body streams to the client as the origin sends
/// it, never held whole in the isolate. `UPSTREAM_TIMEOUT_MS` bounds the wait
/// for the answer's headers (504). The body then streams for as long as the
/// origin sends it: the runtime pumps it natively once the Worker has answered,
/// out of the signal's reach — a large download is never cut at the timeout,
/// and an origin that stalls mid-body holds only its client's connection.
///
/// The call is one call into JavaScript (`pass_through`, src/js/glue.js), which
/// resolves to the origin's answer without its hop-by-hop headers, or to the
/// 504/502 problem; it never rejects. What to call, with what and how long to
/// wait is decided here. Made in Rust, the same call would be a dozen calls
/// into the runtime (headers, options, the signal, an await, the answer's
/// headers copied and deleted one by one).
pub fn pass(
    cfg: &Config,
    url: &str,
    body: Outgoing<'_>,
    forward: &[(String, String)],
    finish: Option<Finish<'_>>,
) -> js_sys::Promise {
    static SETUP: std::sync::Once = std::sync::Once::new();
    SETUP.call_once(|| {
        let problem = |e: ApiError| e.to_problem().body.to_string();
        crate::js::pass_setup(
            &HOP_BY_HOP.join(","),
            &problem(ApiError::UpstreamTimeout),
            &problem(ApiError::UpstreamUnreachable),
        );
    });
    let body: JsValue = match body {
        Outgoing::Bytes(bytes) => js_sys::Uint8Array::from(bytes).into(),
        Outgoing::Stream(Some(stream)) => stream.into(),
        Outgoing::Stream(None) => JsValue::NULL,
    };
    let forward = crate::http::header_lines(forward.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let timeout = cfg.upstream_timeout_ms as f64;
    match finish {
        None => crate::js::pass_through(
            &body,
            url,
            &forward,
            timeout,
            false,
            "",
            0.0,
            &JsValue::UNDEFINED,
        ),
        Some(f) => crate::js::pass_through(
            &body,
            url,
            &forward,
            timeout,
            true,
            f.request_id,
            f.started_ms,
            f.logged.as_ref().unwrap_or(&JsValue::UNDEFINED),
        ),
    }
}

/// A keyed call's POST: the forwarded headers (and the key, if any) with
/// `body`, under `AbortSignal.timeout(UPSTREAM_TIMEOUT_MS)`, which aborts the
/// call and, while the Worker runs, the reading of its answer's body. Resolves
/// at the answer's headers.
async fn send(
    cfg: &Config,
    url: &str,
    body: &[u8],
    forward: &[(String, String)],
    key: Option<OriginKey<'_>>,
) -> Result<web_sys::Response, JsValue> {
    let headers = web_sys::Headers::new()?;
    for (n, v) in forward {
        headers.set(n, v)?;
    }
    if let Some(k) = key {
        headers.set("idempotency-key", k.key)?;
        if let Some(fence) = k.fence {
            headers.set(FENCE_HEADER, &fence.to_string())?;
        }
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&js_sys::Uint8Array::from(body));
    let timeout = web_sys::AbortSignal::timeout_with_f64(cfg.upstream_timeout_ms as f64);
    init.set_signal(Some(&timeout));
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    js_sys::futures::JsFuture::from(global.fetch_with_str_and_init(url, &init))
        .await?
        .dyn_into()
}

/// Why a call that did not time out failed (the origin not reached, or gone).
fn message(e: JsValue) -> String {
    worker::Error::from(e).to_string()
}

/// Whether a rejected fetch ran out of its `AbortSignal.timeout`.
fn is_timeout(e: &JsValue) -> bool {
    js_sys::Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .is_some_and(|n| n == "TimeoutError")
}

#[cfg(test)]
mod tests {
    use super::relayable;

    #[test]
    fn only_a_final_status_of_three_digits_is_relayed() {
        for status in [200, 204, 301, 404, 422, 500, 504, 599] {
            assert!(relayable(status), "{status}");
        }
        for status in [0, 100, 101, 199, 600, 999, u16::MAX] {
            assert!(!relayable(status), "{status}");
        }
    }
}
