//! Building `worker::Response`s: problems, JSON, stored answers and replays.

use crate::console::Asset;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use worker::{Headers, Response, ResponseBuilder};

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

/// Internal header from the Durable Object to the Worker naming what happened
/// (`executed`, `replayed`, `conflict`, `mismatch`, `failed`); stripped before the
/// answer leaves the Worker.
pub const OUTCOME_HEADER: &str = "x-idemgate-outcome";

/// Internal header on final answers from the object: when the stored answer
/// expires (ms), for the Worker's replay cache; stripped like the outcome.
pub const EXPIRES_HEADER: &str = "x-idemgate-expires-at";

/// Internal header on an execution that took over a dead holder's lease; the
/// Worker counts it and strips it.
pub const TAKEOVER_HEADER: &str = "x-idemgate-takeover";

/// Public header on every answer stored under an idempotency key (first
/// execution, replay, and the key-status endpoint): when its record expires, as
/// an HTTP-date (RFC 9110 §5.6.7). After it, the key is new again.
pub const IDEMPOTENCY_EXPIRES_HEADER: &str = "idempotency-expires";

/// `ms` since the Unix epoch as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// rounded up to the whole second so the key is never new before the date says.
pub fn http_date(ms: i64) -> String {
    let secs = (ms.max(0) as u64).div_ceil(1000);
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

pub fn problem(err: &ApiError) -> Response {
    let p = err.to_problem();
    let headers = Headers::new();
    let _ = headers.set("content-type", PROBLEM_JSON);
    if let Some(s) = p.retry_after {
        let _ = headers.set("retry-after", &s.to_string());
    }
    if let Some(allow) = p.allow {
        let _ = headers.set("allow", allow);
    }
    ResponseBuilder::new()
        .with_status(p.status)
        .with_headers(headers)
        .fixed(p.body.to_string().into_bytes())
}

/// A problem as a storable answer (for handler 4xx results that are cached).
pub fn problem_stored(err: &ApiError) -> StoredResponse {
    let p = err.to_problem();
    StoredResponse {
        status: p.status,
        headers: vec![("content-type".into(), PROBLEM_JSON.into())],
        body: p.body.to_string().into_bytes(),
    }
}

/// A JSON answer to store, with extra (allow-listed) headers such as `location`.
pub fn json_stored(
    status: u16,
    body: &serde_json::Value,
    extra: &[(&str, &str)],
) -> StoredResponse {
    let mut headers = vec![("content-type".to_string(), JSON.to_string())];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    StoredResponse {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
}

/// A static file with its headers; `head` sends the headers alone.
pub fn asset(asset: &Asset, extra: &[(&str, &str)], head: bool) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", asset.content_type);
    for (n, v) in extra {
        let _ = headers.set(n, v);
    }
    let body = if head {
        Vec::new()
    } else {
        asset.body.as_bytes().to_vec()
    };
    ResponseBuilder::new()
        .with_status(200)
        .with_headers(headers)
        .fixed(body)
}

pub fn json(status: u16, body: &serde_json::Value) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", JSON);
    ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .fixed(body.to_string().into_bytes())
}

/// A text body (already serialised) with its content type.
pub fn text(status: u16, content_type: &str, body: String) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .fixed(body.into_bytes())
}

/// Sends a stored answer, with `extra` headers added (key echo, replay marks).
pub fn stored(resp: &StoredResponse, extra: &[(&str, &str)]) -> Response {
    let headers = Headers::new();
    for (n, v) in &resp.headers {
        let _ = headers.append(n, v);
    }
    for (n, v) in extra {
        let _ = headers.set(n, v);
    }
    ResponseBuilder::new()
        .with_status(resp.status)
        .with_headers(headers)
        .fixed(resp.body.clone())
}

/// Headers that mark a replayed answer (both the IETF and the legacy name).
pub const REPLAY_MARKS: [(&str, &str); 2] = [
    ("idempotent-replayed", "true"),
    ("x-idempotency-replay", "true"),
];

/// Phase durations for the `Server-Timing` response header (RFC: W3C Server
/// Timing), so a client or the benchmark can see where a request spent its time.
/// Clocks in Workers advance only across I/O, which is what these phases are.
#[derive(Default)]
pub struct Timings(Vec<(&'static str, f64)>);

impl Timings {
    pub fn now() -> f64 {
        js_sys::Date::now()
    }

    /// Records the phase `name` as lasting from `since` until now.
    pub fn since(&mut self, name: &'static str, since: f64) {
        self.0.push((name, Self::now() - since));
    }

    /// Records the phase `name` as lasting `ms`.
    pub fn record(&mut self, name: &'static str, ms: f64) {
        self.0.push((name, ms));
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, d)| format!("{n};dur={d:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Appends to a response's `Server-Timing` header.
    pub fn apply(&self, resp: &mut Response) {
        if !self.0.is_empty() {
            let _ = resp.headers_mut().append("server-timing", &self.header());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_are_http_dates_rounded_up_to_the_second() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(784_111_776_001), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // The longest TTL from now still prints.
        let far = 1_800_000_000_000 + crate::config::MAX_TTL_SECONDS * 1000;
        assert!(http_date(far).ends_with(" GMT"));
    }
}
