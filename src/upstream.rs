//! The one outbound HTTP call: an origin function, the trainer (`TRAINER_URL`)
//! or the accounting destination (`DESTINATION_URL`), each bounded by
//! `UPSTREAM_TIMEOUT_MS` (the fetch is aborted when it runs out).

use crate::config::Config;
use futures_util::future::{select, Either};
use std::time::Duration;
use wasm_bindgen::JsCast;
use worker::worker_sys::web_sys;
use worker::{AbortController, Delay, Headers};

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

/// POSTs `body` once, giving up after `UPSTREAM_TIMEOUT_MS` (the fetch is aborted).
pub async fn call(
    cfg: &Config,
    url: &str,
    body: &[u8],
    forward: &[(String, String)],
    key: Option<&str>,
) -> UpstreamResult {
    let headers = Headers::new();
    for (n, v) in forward {
        let _ = headers.set(n, v);
    }
    if let Some(k) = key {
        let _ = headers.set("idempotency-key", k);
    }
    let req = match crate::raw_fetch::request(url, "POST", &headers, Some(body)) {
        Ok(r) => r,
        Err(e) => return UpstreamResult::Unreachable(e.to_string()),
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let sending = Box::pin(async move {
        let answer = crate::raw_fetch::send(&req, &signal).await?;
        let headers: Vec<(String, String)> = answer
            .headers
            .entries()
            .filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()))
            .collect();
        Ok::<_, worker::Error>((answer.status, headers, answer.body))
    });
    let timer = Delay::from(Duration::from_millis(cfg.upstream_timeout_ms));
    match select(sending, timer).await {
        Either::Left((Ok((status, headers, body)), _)) => UpstreamResult::Answered {
            status,
            headers,
            body,
        },
        Either::Left((Err(e), _)) => UpstreamResult::Unreachable(e.to_string()),
        Either::Right(_) => {
            controller.abort();
            UpstreamResult::TimedOut
        }
    }
}

/// A passthrough's request body: the bytes read, or the request's own stream
/// (none for an empty body).
pub enum Outgoing<'a> {
    Bytes(&'a [u8]),
    Stream(Option<web_sys::ReadableStream>),
}

/// What the origin did with a passthrough.
pub enum Passed {
    /// Its answer, hop-by-hop headers removed, the body still streaming from
    /// the origin.
    Answered(web_sys::Response),
    TimedOut,
    Unreachable(String),
}

/// POSTs a passthrough once (`UPSTREAM_KEY_POLICY=optional`, no key): nothing
/// is stored, so the answer's body streams to the client as the origin sends
/// it, never held whole in the isolate. `UPSTREAM_TIMEOUT_MS` bounds the whole
/// exchange (`AbortSignal.timeout`): before the answer's headers it is a 504;
/// after them the body is cut off where it stands (the status is already sent).
pub async fn pass(
    cfg: &Config,
    url: &str,
    body: Outgoing<'_>,
    forward: &[(String, String)],
) -> Passed {
    match send_pass(cfg, url, body, forward).await {
        Ok(answer) => Passed::Answered(answer),
        Err(e) if is_timeout(&e) => Passed::TimedOut,
        Err(e) => Passed::Unreachable(
            e.as_string()
                .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| e.to_string().into()))
                .unwrap_or_else(|| format!("{e:?}")),
        ),
    }
}

async fn send_pass(
    cfg: &Config,
    url: &str,
    body: Outgoing<'_>,
    forward: &[(String, String)],
) -> Result<web_sys::Response, wasm_bindgen::JsValue> {
    let headers = web_sys::Headers::new()?;
    for (n, v) in forward {
        headers.set(n, v)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    match body {
        Outgoing::Bytes(bytes) => init.set_body(&js_sys::Uint8Array::from(bytes)),
        Outgoing::Stream(Some(stream)) => init.set_body(&stream),
        Outgoing::Stream(None) => {}
    }
    let timeout = cfg.upstream_timeout_ms.min(u32::MAX as u64) as u32;
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(timeout)));
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let answer: web_sys::Response =
        js_sys::futures::JsFuture::from(global.fetch_with_str_and_init(url, &init))
            .await?
            .dyn_into()?;
    let out = web_sys::Headers::new_with_headers(&answer.headers())?;
    for name in HOP_BY_HOP {
        out.delete(name)?;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(answer.status());
    init.set_headers(&out);
    web_sys::Response::new_with_opt_readable_stream_and_init(answer.body().as_ref(), &init)
}

/// Whether a rejected fetch ran out of its `AbortSignal.timeout`.
fn is_timeout(e: &wasm_bindgen::JsValue) -> bool {
    js_sys::Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .is_some_and(|n| n == "TimeoutError")
}
