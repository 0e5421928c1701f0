//! Building `worker::Response`s: problems, JSON, stored answers and replays.

use crate::console::Asset;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use worker::worker_sys::web_sys;
use worker::{Response, ResponseBody, ResponseBuilder};

use crate::js::{answer_bytes, answer_stream, header_fill};

/// The runtime's `Response` for `resp`, with the Worker's own `Server-Timing`
/// entries (`timing`, if any) and its `X-Request-Id` added: one call into the
/// runtime, where workers-rs's conversion makes six.
pub fn answer(resp: Response, timing: &str, request_id: &str) -> web_sys::Response {
    let (status, headers) = (resp.status_code(), &resp.headers().0);
    match resp.body() {
        ResponseBody::Body(bytes) => answer_bytes(status, headers, bytes, timing, request_id),
        ResponseBody::Stream(body) => {
            answer_stream(status, headers, Some(body), timing, request_id)
        }
        ResponseBody::Empty => answer_stream(status, headers, None, timing, request_id),
    }
}

/// Headers as `name:value` lines, for [`header_fill`]: one call into the runtime
/// for a whole set instead of one per header. A pair that cannot be a header
/// (a line break anywhere, a colon or nothing in the name) is left out: the
/// runtime would refuse it.
pub(crate) fn header_lines<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines = String::new();
    for (n, v) in pairs {
        if n.is_empty() || n.contains([':', '\n']) || v.contains('\n') {
            continue;
        }
        if !lines.is_empty() {
            lines.push('\n');
        }
        lines.push_str(n);
        lines.push(':');
        lines.push_str(v);
    }
    lines
}

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

/// Internal header from the Durable Object to the Worker naming what happened
/// (`executed`, `replayed`, `conflict`, `mismatch`, `failed`); stripped before the
/// answer leaves the Worker.
pub const OUTCOME_HEADER: &str = "x-idemgate-outcome";

/// Internal header on final answers from the object: when the stored answer
/// expires (ms), which the Worker states as `Idempotency-Expires`; stripped like
/// the outcome.
pub const EXPIRES_HEADER: &str = "x-idemgate-expires-at";

/// Internal header on an execution that took over a dead holder's lease; the
/// Worker counts it and strips it.
pub const TAKEOVER_HEADER: &str = "x-idemgate-takeover";

/// Internal header on a replay from the object: how long (ms) the Worker may
/// keep a copy of it ([`crate::idempotency::copies`]); stripped like the others.
pub const COPY_HEADER: &str = "x-idemgate-copy-ms";

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
    reply(problem_reply(err))
}

/// A problem as a storable answer (for handler 4xx results that are cached).
pub fn problem_stored(err: &ApiError) -> StoredResponse {
    stored_problem(&err.to_problem())
}

fn stored_problem(p: &crate::problem::Problem) -> StoredResponse {
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
    let body = if head {
        Vec::new()
    } else {
        asset.body.as_bytes().to_vec()
    };
    let out = ResponseBuilder::new().with_status(200).fixed(body);
    let headers = out.headers();
    let _ = headers.set("content-type", asset.content_type);
    for (n, v) in extra {
        let _ = headers.set(n, v);
    }
    out
}

pub fn json(status: u16, body: &serde_json::Value) -> Response {
    text(status, JSON, body.to_string())
}

/// A text body (already serialised) with its content type.
pub fn text(status: u16, content_type: &str, body: String) -> Response {
    let out = ResponseBuilder::new()
        .with_status(status)
        .fixed(body.into_bytes());
    let _ = out.headers().set("content-type", content_type);
    out
}

/// Sends a stored answer, with `extra` headers added (key echo, replay marks).
pub fn stored(resp: &StoredResponse, extra: &[(&str, &str)]) -> Response {
    let out = ResponseBuilder::new()
        .with_status(resp.status)
        .fixed(resp.body.clone());
    // The stored headers appended, then `extra` replacing any of the same name.
    let appended = header_lines(resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    header_fill(
        &out.headers().0,
        &appended,
        &header_lines(extra.iter().copied()),
    );
    out
}

/// `resp` with `extra` headers: the stored headers, then each of `extra`
/// replacing any of the same name — what [`stored`] sends, as data (the key's
/// object answers so, and the Worker sends it with one call into the runtime).
pub fn stored_with(mut resp: StoredResponse, extra: &[(&str, &str)]) -> StoredResponse {
    for (n, v) in extra {
        set_header(&mut resp.headers, n, v);
    }
    resp
}

/// Sets `name` to `value` in `headers`: every pair of that name (in any case)
/// replaced by one, as `Headers.set` does.
pub fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value.to_string()));
}

/// A problem as data: its status, `application/problem+json` body, and its
/// `Retry-After` or `Allow` — what [`problem`] sends.
pub fn problem_reply(err: &ApiError) -> StoredResponse {
    let p = err.to_problem();
    let mut out = stored_problem(&p);
    if let Some(s) = p.retry_after {
        out.headers.push(("retry-after".into(), s.to_string()));
    }
    if let Some(allow) = p.allow {
        out.headers.push(("allow".into(), allow.to_string()));
    }
    out
}

/// Reads [`header_lines`] back into pairs (a line without a colon is skipped).
pub fn parse_header_lines(lines: &str) -> Vec<(String, String)> {
    lines
        .split('\n')
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Sends `resp` as it is: its status, its headers (one call into the runtime)
/// and its body.
pub fn reply(resp: StoredResponse) -> Response {
    let lines = header_lines(resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let out = ResponseBuilder::new()
        .with_status(resp.status)
        .fixed(resp.body);
    header_fill(&out.headers().0, &lines, "");
    out
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

    /// `name;dur=1.5, …`, each duration to a tenth of a millisecond.
    pub fn header(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(24 * self.0.len());
        for (i, (n, d)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            // In tenths, as an integer: float formatting costs more than the
            // rest of the header together.
            let tenths = (d * 10.0).round();
            if tenths.is_finite() && tenths.abs() < 1e15 {
                let t = tenths as i64;
                let sign = if t < 0 { "-" } else { "" };
                let _ = write!(out, "{n};dur={sign}{}.{}", t.abs() / 10, t.abs() % 10);
            } else {
                let _ = write!(out, "{n};dur={d:.1}");
            }
        }
        out
    }

    /// Appends to a response's `Server-Timing` header.
    pub fn apply(&self, resp: &mut Response) {
        if !self.0.is_empty() {
            let _ = resp.headers_mut().append("server-timing", &self.header());
        }
    }

    /// [`Timings::apply`] on headers held as data.
    pub fn apply_to(&self, headers: &mut Vec<(String, String)>) {
        if !self.0.is_empty() {
            headers.push(("server-timing".into(), self.header()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_carry_every_header_a_runtime_would_take() {
        let pairs = [
            ("content-type", "application/json"),
            ("x-odd", "a:b: c"),
            ("", "no name"),
            ("bad:name", "v"),
            ("x-split", "one\ntwo"),
            ("x-empty", ""),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ];
        assert_eq!(
            header_lines(pairs.into_iter()),
            "content-type:application/json\nx-odd:a:b: c\nx-empty:\nset-cookie:a=1\nset-cookie:b=2"
        );
        assert_eq!(header_lines(std::iter::empty()), "");
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_lines_read_back_into_the_pairs_they_carry() {
        let sent = [
            ("content-type", "application/json"),
            ("x-odd", "a:b: c"),
            ("x-empty", ""),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-idemgate-outcome", "replayed"),
        ];
        let lines = header_lines(sent.into_iter());
        assert_eq!(parse_header_lines(&lines), pairs(&sent));
        // What a runtime would refuse is not carried, so not read back either.
        let refused = [("", "no name"), ("x-split", "one\ntwo"), ("bad:name", "v")];
        assert_eq!(
            parse_header_lines(&header_lines(refused.into_iter())),
            vec![]
        );
        assert_eq!(parse_header_lines(""), vec![]);
    }

    #[test]
    fn a_stored_answer_with_extra_headers_has_each_extra_once_in_place_of_its_namesakes() {
        let stored = StoredResponse {
            status: 201,
            headers: pairs(&[
                ("content-type", "application/json"),
                ("Idempotency-Key", "forged"),
                ("location", "/v1/documents/doc_1"),
                ("idempotency-key", "forged again"),
            ]),
            body: b"{}".to_vec(),
        };
        let out = stored_with(
            stored,
            &[("idempotency-key", "k-1"), ("idempotent-replayed", "true")],
        );
        assert_eq!(out.status, 201);
        assert_eq!(out.body, b"{}");
        assert_eq!(
            out.headers,
            pairs(&[
                ("content-type", "application/json"),
                ("location", "/v1/documents/doc_1"),
                ("idempotency-key", "k-1"),
                ("idempotent-replayed", "true"),
            ])
        );
        // Setting again replaces, whatever the case of the name.
        let mut headers = out.headers;
        set_header(&mut headers, "Idempotent-Replayed", "false");
        assert_eq!(
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("idempotent-replayed"))
                .count(),
            1
        );
        assert_eq!(headers.last().unwrap().1, "false");
    }

    #[test]
    fn a_problem_as_data_carries_its_retry_after_and_allow() {
        let busy = problem_reply(&ApiError::KeyInFlight { key: "k".into() });
        assert_eq!(busy.status, 409);
        assert_eq!(
            busy.headers,
            pairs(&[("content-type", PROBLEM_JSON), ("retry-after", "1")])
        );
        let body: serde_json::Value = serde_json::from_slice(&busy.body).unwrap();
        assert_eq!(body["status"], 409);
        let wrong = problem_reply(&ApiError::MethodNotAllowed {
            allow: "GET, HEAD".into(),
        });
        assert_eq!(
            wrong.headers,
            pairs(&[("content-type", PROBLEM_JSON), ("allow", "GET, HEAD")])
        );
    }

    #[test]
    fn server_timing_durations_print_to_a_tenth() {
        let mut t = Timings::default();
        assert_eq!(t.header(), "");
        for d in [
            0.0, 0.04, 0.05, 1.0, 2.25, 12.345, 99.96, 1234567.0, -0.04, -3.26,
        ] {
            t.record("p", d);
        }
        let want: Vec<String> = t.0.iter().map(|(n, d)| format!("{n};dur={d:.1}")).collect();
        // Rounding at exact halves may differ from `{:.1}`'s (half to even on the
        // binary value); every other value prints the same.
        let got = t.header();
        let got: Vec<&str> = got.split(", ").collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let (g, w): (f64, f64) = (g[6..].parse().unwrap(), w[6..].parse().unwrap());
            assert!((g - w).abs() < 0.1 + 1e-9, "{g} vs {w}");
        }
        assert_eq!(got[3], "p;dur=1.0");
        assert_eq!(got[5], "p;dur=12.3");
        assert_eq!(got[6], "p;dur=100.0");
        assert_eq!(got[7], "p;dur=1234567.0");
        assert_eq!(got[9], "p;dur=-3.3");
        t.record("q", f64::NAN);
        assert!(t.header().ends_with(", q;dur=NaN"));
    }

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
