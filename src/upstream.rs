//! The one outbound HTTP call: an origin function, the trainer (`TRAINER_URL`)
//! or the accounting destination (`DESTINATION_URL`), each bounded by
//! `UPSTREAM_TIMEOUT_MS` (the fetch is aborted when it runs out).

use crate::config::Config;
use futures_util::future::{select, Either};
use std::time::Duration;
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
