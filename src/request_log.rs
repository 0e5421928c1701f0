//! The request log: one JSON line per request, printed by the Worker
//! with `console.log` — so it shows in `wrangler dev`, `wrangler tail` and
//! Workers Logs (`[observability]` in `wrangler.toml`).
//!
//! Plain data and plain logic, no `worker::` import: the Worker fills a [`Trace`]
//! as the request goes (tenant once authenticated, how far it got, the key's
//! hash), then [`Start::record`] turns it, the status and the `Server-Timing`
//! phases the Worker already measures into a [`RequestLog`], and the Worker
//! prints [`RequestLog::line`].
//!
//! What a line may hold is chosen so that logs can be shipped anywhere: never a
//! raw idempotency key (only a 12-hex-digit prefix of its scoped SHA-256), a
//! token, a body, a header value, or a concrete path (ids and keys in paths may
//! be user data: the route is always a template).

use crate::commands::{Endpoint, Keyed};
use crate::envelope::GateOutcome;
use crate::idempotency::scope::forwarded_key;
use serde::Serialize;
use std::cell::{Cell, RefCell};

/// Hex digits of the key's scoped SHA-256 kept in `key_sha256` (48 bits: enough to
/// tell a tenant's keys apart in a log search, far from enough to identify a key).
pub const KEY_HASH_HEX: usize = 12;

/// The `route` of a path that matches no route of idemgate.
pub const UNMATCHED: &str = "unmatched";

/// What happened to a request, one word (the `outcome` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A keyed write ran its handler; its answer is stored.
    Executed,
    /// A stored answer was sent again (by the key's object or the isolate's cache).
    Replayed,
    /// A stored answer, after waiting for the first request (`Prefer: wait=N`).
    Waited,
    /// 409: the key is in flight (and no wait, or the wait ran out).
    Conflict,
    /// 422: the key was used with another payload.
    Mismatch,
    /// A keyed write whose answer is not stored (a 5xx, a throw, a storage
    /// failure): the key is free again.
    Failed,
    /// No key, sent straight to the origin (`UPSTREAM_KEY_POLICY=optional`).
    Passthrough,
    /// A 4xx before any work: no route, method, auth, key syntax, validation.
    Rejected,
    /// A read route answered (D1 reads, health, the console, `OPTIONS`) — any
    /// status below 500; a 404 there is an absent resource.
    Read,
    /// The key admin routes (`/v1/idempotency/keys/{key}`: state, release) and
    /// the stats answered, whatever the status below 500.
    Admin,
    /// A 5xx outside a keyed run: storage unreachable, auth not configured, a panic.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Executed,
        Outcome::Replayed,
        Outcome::Waited,
        Outcome::Conflict,
        Outcome::Mismatch,
        Outcome::Failed,
        Outcome::Passthrough,
        Outcome::Rejected,
        Outcome::Read,
        Outcome::Admin,
        Outcome::Error,
    ];
}

/// How far the Worker got with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// Routing, auth, key syntax, validation: nothing has been done yet.
    #[default]
    Edge,
    /// A read route took it (it asked for D1).
    Read,
    /// A key admin route or the stats took it.
    Admin,
    /// The key's object answered with
    /// `outcome`; `waited` if it waited for the first request's answer
    /// (the object then sends `Preference-Applied`).
    Gate { outcome: GateOutcome, waited: bool },
    /// Sent to the origin without a key.
    Passthrough,
}

/// The outcome of a request that got to `stage` and was answered `status`.
pub fn outcome(stage: Stage, status: u16) -> Outcome {
    match stage {
        Stage::Gate { outcome, waited } => match outcome {
            GateOutcome::Executed => Outcome::Executed,
            GateOutcome::Replayed if waited => Outcome::Waited,
            GateOutcome::Replayed => Outcome::Replayed,
            GateOutcome::Conflict => Outcome::Conflict,
            GateOutcome::Mismatch => Outcome::Mismatch,
            GateOutcome::Failed => Outcome::Failed,
        },
        // The origin's status, whatever it is, is the origin's.
        Stage::Passthrough => Outcome::Passthrough,
        _ if status >= 500 => Outcome::Error,
        Stage::Edge if status >= 400 => Outcome::Rejected,
        // Answered at the edge without error: health, the console, OPTIONS.
        Stage::Edge | Stage::Read => Outcome::Read,
        Stage::Admin => Outcome::Admin,
    }
}

/// What the Worker learns about a request as it handles it. Shared by
/// reference through the handling (cells: nothing is borrowed across an await).
#[derive(Debug, Default)]
pub struct Trace {
    /// Arrival (a `Timings::now` reading): durations the counters record run from it.
    pub started: f64,
    tenant: RefCell<Option<String>>,
    stage: Cell<Stage>,
    /// The key's record scope, route and key (hashed only for a line: see
    /// [`Trace::keyed`]).
    key: RefCell<Option<(String, String, String)>>,
}

impl Trace {
    pub fn new(started: f64) -> Self {
        Trace {
            started,
            ..Trace::default()
        }
    }

    /// The caller is authenticated as a member of `tenant`.
    pub fn authenticated(&self, tenant: &str) {
        *self.tenant.borrow_mut() = Some(tenant.to_string());
    }

    pub fn at(&self, stage: Stage) {
        self.stage.set(stage);
    }

    /// A read route asks for D1: the request is a read unless it was already
    /// marked as something else (the stats read D1 as an admin route).
    pub fn reading(&self) {
        if self.stage.get() == Stage::Edge {
            self.stage.set(Stage::Read);
        }
    }

    /// The request is about `key` in `scope` (the key's record scope) on the
    /// concrete `route`: the log keeps a prefix of their SHA-256 — the key
    /// idemgate forwards to origin functions — never the key.
    pub fn keyed(&self, scope: &str, route: &str, key: &str) {
        *self.key.borrow_mut() = Some((scope.into(), route.into(), key.into()));
    }

    /// See [`Trace::keyed`]: computed when a line is made (with the request
    /// log off, a request pays for no hash).
    fn key_sha256(&self) -> Option<String> {
        let key = self.key.borrow();
        key.as_ref()
            .map(|(scope, route, key)| key_hash(scope, route, key))
    }

    pub fn stage(&self) -> Stage {
        self.stage.get()
    }
}

/// The first [`KEY_HASH_HEX`] hex digits of the key's scoped SHA-256 (the
/// forwarded key: an origin's log of `Idempotency-Key` starts with the same digits).
pub fn key_hash(scope: &str, route: &str, key: &str) -> String {
    let mut h = forwarded_key(scope, route, key);
    h.truncate(KEY_HASH_HEX);
    h
}

/// One request's log line. Fields that do not apply are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestLog {
    /// Always `"request"`: tells these lines from the Worker's other output.
    pub event: &'static str,
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub request_id: String,
    /// The caller's tenant, once authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub method: String,
    /// The route template (`POST /v1/training-jobs/{id}/cancel`), or `unmatched`.
    pub route: String,
    pub outcome: Outcome,
    pub status: u16,
    /// In the Worker, from arrival to the answer's headers.
    pub total_ms: f64,
    /// Worker → key's object → Worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ms: Option<f64>,
    /// The origin function's call (keyed, inside the object; or passthrough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_ms: Option<f64>,
    /// See [`key_hash`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
}

impl RequestLog {
    /// One compact JSON object on one line: control characters in any string
    /// (a tenant claim with a newline) are escaped, so a line cannot be forged.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What is known when a request arrives: enough for the line a panic leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub request_id: String,
    /// Arrival, ms since the epoch.
    pub at_ms: f64,
    pub method: String,
    pub route: String,
}

impl Start {
    /// `route`: the request's [`route_template`].
    pub fn new(request_id: String, at_ms: f64, method: &str, route: String) -> Self {
        Start {
            request_id,
            at_ms,
            method: method.to_string(),
            route,
        }
    }

    /// The line for a request answered `status` at `now_ms`, after `trace`;
    /// `server_timing` is the answer's `Server-Timing` header, whose phases
    /// give the object's and the origin's durations.
    pub fn record(
        &self,
        trace: &Trace,
        status: u16,
        now_ms: f64,
        server_timing: Option<&str>,
    ) -> RequestLog {
        let phase = |name| server_timing.and_then(|h| timing_phase(h, name));
        let stage = trace.stage();
        // Phases by name only where idemgate set them: a passthrough answer
        // carries the origin's own `Server-Timing` entries too.
        let origin_ms = match stage {
            Stage::Passthrough => phase("upstream"),
            Stage::Gate { .. } if self.route == Endpoint::CallFunction.template() => {
                phase("handler")
            }
            _ => None,
        };
        let object_ms = match stage {
            Stage::Gate { .. } | Stage::Admin => phase("gate"),
            _ => None,
        };
        RequestLog {
            event: "request",
            time: rfc3339_ms(self.at_ms),
            request_id: self.request_id.clone(),
            tenant: trace.tenant.borrow().clone(),
            method: self.method.clone(),
            route: self.route.clone(),
            outcome: outcome(stage, status),
            status,
            total_ms: round_ms(now_ms - self.at_ms),
            object_ms,
            origin_ms,
            key_sha256: trace.key_sha256(),
        }
    }
}

fn round_ms(ms: f64) -> f64 {
    (ms.max(0.0) * 10.0).round() / 10.0
}

/// The route template of a request: the command table's for a keyed write, a
/// fixed one for the other routes, [`UNMATCHED`] otherwise — never a concrete
/// path (its ids and keys may be user data). `keyed`: the path's keyed route as
/// [`crate::commands::match_path`] found it (the Worker matches a path once, for
/// its router and for this).
pub fn route_template(method: &str, path: &str, keyed: Option<&Keyed>) -> String {
    let keyed = keyed.map(|k| k.endpoint.template());
    if let Some(t) = keyed.filter(|t| t.split(' ').next() == Some(method)) {
        return t.to_string();
    }
    let admin = path.starts_with(crate::idempotency::key::ADMIN_PATH_PREFIX);
    let path = if admin {
        path
    } else {
        path.trim_end_matches('/')
    };
    let pattern = crate::route_table::matching(path)
        .map(|(r, _)| r.path)
        .next()
        // A keyed write's path with another method (answered 405, or a read
        // such as `GET /v1/training-jobs`, found above).
        .or_else(|| keyed.and_then(|t| t.split_once(' ')).map(|(_, p)| p));
    match pattern {
        Some(p) => format!("{method} {p}"),
        None => UNMATCHED.to_string(),
    }
}

/// The duration of the last phase called `name` in a `Server-Timing` header
/// value (`worker;dur=1.2, gate;dur=0.8`): the last, since the Worker's own
/// phases are appended after any an origin sent.
pub fn timing_phase(header: &str, name: &str) -> Option<f64> {
    header.split(',').rev().find_map(|entry| {
        let mut params = entry.split(';').map(str::trim);
        if params.next()? != name {
            return None;
        }
        params.find_map(|p| {
            p.strip_prefix("dur=")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
        })
    })
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds (`2026-11-27T11:04:32.123Z`).
pub fn rfc3339_ms(ms: f64) -> String {
    let ms = ms.max(0.0) as i64;
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`: eras of 400 years, March-based years).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::match_path;
    use serde_json::Value;

    fn start(method: &'static str, path: &str) -> Start {
        Start::new(
            "0123456789abcdef0123456789abcdef".into(),
            1_795_777_472_123.0,
            method,
            route_template(method, path, match_path(path).as_ref()),
        )
    }

    fn fields(log: &RequestLog) -> Value {
        let line = log.line();
        assert!(!line.contains('\n'), "{line}");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn a_keyed_execution_logs_every_field_with_its_type() {
        let s = start("POST", "/functions/v1/echo");
        let trace = Trace::default();
        trace.authenticated("acme");
        trace.keyed("acme:alice", "POST /functions/v1/echo", "order-42");
        trace.at(Stage::Gate {
            outcome: GateOutcome::Executed,
            waited: false,
        });
        let log = s.record(
            &trace,
            200,
            s.at_ms + 12.34,
            Some("run;dur=7.0, handler;dur=5.5, gate;dur=9.1, worker;dur=12.3"),
        );
        let v = fields(&log);
        // Every field, in this order on the line (the struct's).
        let line = log.line();
        let at = |k: &str| line.find(&format!("\"{k}\":")).unwrap_or(usize::MAX);
        let order = [
            "event",
            "time",
            "request_id",
            "tenant",
            "method",
            "route",
            "outcome",
            "status",
            "total_ms",
            "object_ms",
            "origin_ms",
            "key_sha256",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{line}");
        assert_eq!(v.as_object().unwrap().len(), order.len());
        assert_eq!(v["event"], "request");
        assert_eq!(v["time"], "2026-11-27T11:04:32.123Z");
        assert_eq!(v["request_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["route"], "POST /functions/v1/{name}");
        assert_eq!(v["outcome"], "executed");
        assert_eq!(v["status"], 200);
        assert_eq!(v["total_ms"], 12.3);
        assert_eq!(v["object_ms"], 9.1);
        assert_eq!(v["origin_ms"], 5.5);
        assert_eq!(
            v["key_sha256"],
            &forwarded_key("acme:alice", "POST /functions/v1/echo", "order-42")[..12]
        );
    }

    #[test]
    fn fields_that_do_not_apply_are_left_out() {
        let s = start("GET", "/healthz");
        let v = fields(&s.record(&Trace::default(), 200, s.at_ms, None));
        for absent in ["tenant", "object_ms", "origin_ms", "key_sha256"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        assert_eq!(v["outcome"], "read");
        assert_eq!(v["route"], "GET /healthz");
        assert_eq!(v["total_ms"], 0.0);
    }

    #[test]
    fn no_raw_key_token_path_id_or_body_reaches_the_line() {
        let key = "secret-key-0f3a";
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        let id = "exp_deadbeefcafe";
        let s = start("PUT", &format!("/v1/staging/exports/{id}/approve"));
        let trace = Trace::default();
        trace.authenticated("acme");
        trace.keyed(
            "acme:alice",
            &format!("PUT /v1/staging/exports/{id}/approve"),
            key,
        );
        trace.at(Stage::Gate {
            outcome: GateOutcome::Replayed,
            waited: false,
        });
        let line = s.record(&trace, 200, s.at_ms + 3.0, None).line();
        for secret in [key, token, id, "alice"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(line.contains("\"route\":\"PUT /v1/staging/exports/{id}/approve\""));
        // The key admin path holds the raw key: only its template is logged.
        let admin = start("DELETE", &format!("/v1/idempotency/keys/{key}/more"));
        assert_eq!(admin.route, "DELETE /v1/idempotency/keys/{key}");
        // What a panicking request's line is built from (panic_guard).
        assert!(![&admin.method, &admin.route, &admin.request_id]
            .iter()
            .any(|f| f.contains(key)));
    }

    #[test]
    fn a_tenant_claim_cannot_break_the_line() {
        let s = start("GET", "/v1/training-jobs");
        let trace = Trace::default();
        trace.authenticated("evil\n{\"event\":\"request\",\"outcome\":\"executed\"}");
        let line = s.record(&trace, 200, s.at_ms, None).line();
        assert_eq!(line.lines().count(), 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["outcome"], "read");
        assert!(v["tenant"].as_str().unwrap().contains('\n'));
    }

    #[test]
    fn outcomes_map_from_stage_and_status() {
        use GateOutcome as G;
        let gate = |outcome, waited| Stage::Gate { outcome, waited };
        let table = [
            (gate(G::Executed, false), 201, Outcome::Executed),
            (gate(G::Executed, false), 502, Outcome::Executed),
            (gate(G::Replayed, false), 201, Outcome::Replayed),
            (gate(G::Replayed, true), 201, Outcome::Waited),
            (gate(G::Conflict, false), 409, Outcome::Conflict),
            (gate(G::Conflict, true), 409, Outcome::Conflict),
            (gate(G::Mismatch, false), 422, Outcome::Mismatch),
            (gate(G::Failed, false), 500, Outcome::Failed),
            (gate(G::Failed, true), 503, Outcome::Failed),
            (Stage::Passthrough, 200, Outcome::Passthrough),
            (Stage::Passthrough, 502, Outcome::Passthrough),
            (Stage::Edge, 400, Outcome::Rejected),
            (Stage::Edge, 401, Outcome::Rejected),
            (Stage::Edge, 404, Outcome::Rejected),
            (Stage::Edge, 405, Outcome::Rejected),
            (Stage::Edge, 413, Outcome::Rejected),
            (Stage::Edge, 503, Outcome::Error),
            (Stage::Edge, 200, Outcome::Read),
            (Stage::Edge, 204, Outcome::Read),
            (Stage::Read, 200, Outcome::Read),
            (Stage::Read, 404, Outcome::Read),
            (Stage::Read, 503, Outcome::Error),
            (Stage::Admin, 204, Outcome::Admin),
            (Stage::Admin, 409, Outcome::Admin),
            (Stage::Admin, 500, Outcome::Error),
        ];
        for (stage, status, want) in table {
            assert_eq!(outcome(stage, status), want, "{stage:?} {status}");
        }
        // Every outcome is reachable, and serialises as its lowercase name.
        for o in Outcome::ALL {
            let name = serde_json::to_value(o).unwrap();
            let name = name.as_str().unwrap();
            assert_eq!(name, name.to_lowercase());
            assert!(table.iter().any(|(_, _, w)| *w == o), "{name} unreachable");
        }
    }

    #[test]
    fn reading_does_not_undo_a_later_stage() {
        let trace = Trace::default();
        trace.at(Stage::Admin);
        trace.reading();
        assert_eq!(trace.stage(), Stage::Admin);
        let trace = Trace::default();
        trace.reading();
        assert_eq!(trace.stage(), Stage::Read);
    }

    #[test]
    fn routes_are_templates_never_concrete_paths() {
        let cases = [
            ("POST", "/v1/documents", "POST /v1/documents"),
            ("POST", "/v1/documents/", "POST /v1/documents"),
            ("GET", "/v1/documents", "GET /v1/documents"),
            ("POST", "/functions/v1/echo", "POST /functions/v1/{name}"),
            (
                "POST",
                "/v1/training-jobs/job_1/cancel",
                "POST /v1/training-jobs/{id}/cancel",
            ),
            (
                "PUT",
                "/v1/staging/exports/exp_1/review",
                "PUT /v1/staging/exports/{id}/review",
            ),
            (
                "POST",
                "/v1/staging/exports/exp_1/review",
                "POST /v1/staging/exports/{id}/review",
            ),
            ("GET", "/v1/training-jobs", "GET /v1/training-jobs"),
            ("POST", "/v1/training-jobs", "POST /v1/training-jobs"),
            (
                "GET",
                "/v1/training-jobs/job_9",
                "GET /v1/training-jobs/{id}",
            ),
            (
                "GET",
                "/v1/training-data/ds_1.jsonl",
                "GET /v1/training-data/{id}.jsonl",
            ),
            (
                "HEAD",
                "/v1/staging/exports/exp_1/diff",
                "HEAD /v1/staging/exports/{id}/diff",
            ),
            (
                "GET",
                "/v1/documents/doc_1/chunks",
                "GET /v1/documents/{id}/chunks",
            ),
            ("GET", "/v1/idempotency/stats", "GET /v1/idempotency/stats"),
            (
                "GET",
                "/v1/idempotency/keys/a%2Fb",
                "GET /v1/idempotency/keys/{key}",
            ),
            (
                "GET",
                "/v1/idempotency/keys/a/b/c",
                "GET /v1/idempotency/keys/{key}",
            ),
            ("GET", "/console/app.js", "GET /console/app.js"),
            ("GET", "/console/not-a-file", UNMATCHED),
            ("OPTIONS", "/healthz", "OPTIONS /healthz"),
            ("GET", "/openapi.json", "GET /openapi.json"),
            ("GET", "/v1/idempotency/keys", UNMATCHED),
            ("GET", "/v1/documents/doc_1/secret-thing", UNMATCHED),
            ("GET", "/user-data-in-a-path", UNMATCHED),
            ("GET", "/", UNMATCHED),
            ("POST", "/v1/training-jobs/bad!id/cancel", UNMATCHED),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                route_template(method, path, match_path(path).as_ref()),
                want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn every_keyed_template_is_its_own_route() {
        for e in Endpoint::ALL {
            let (method, path) = e.template().split_once(' ').unwrap();
            let concrete = path.replace("{id}", "x_1").replace("{name}", "fn-1");
            assert_eq!(
                route_template(method, &concrete, match_path(&concrete).as_ref()),
                e.template()
            );
        }
    }

    #[test]
    fn timing_phases_are_read_from_server_timing() {
        let h = "upstream;dur=99, handler;dur=5.5, gate;desc=\"x\";dur=9.25,upstream;dur=1.5";
        assert_eq!(timing_phase(h, "gate"), Some(9.25));
        assert_eq!(timing_phase(h, "handler"), Some(5.5));
        // The last one: ours come after any the origin sent.
        assert_eq!(timing_phase(h, "upstream"), Some(1.5));
        assert_eq!(timing_phase(h, "run"), None);
        assert_eq!(timing_phase("gate", "gate"), None);
        assert_eq!(timing_phase("gate;dur=NaN", "gate"), None);
        assert_eq!(timing_phase("gate;dur=abc", "gate"), None);
        assert_eq!(timing_phase("", "gate"), None);
    }

    #[test]
    fn passthrough_origin_time_is_the_upstream_phase() {
        let s = start("POST", "/functions/v1/echo");
        let trace = Trace::default();
        trace.authenticated("acme");
        trace.at(Stage::Passthrough);
        // The origin's own phases come first, whatever their names.
        let v = fields(&s.record(
            &trace,
            200,
            s.at_ms + 4.0,
            Some("gate;dur=9, handler;dur=8, upstream;dur=7, upstream;dur=1.7, worker;dur=4.0"),
        ));
        assert_eq!(v["outcome"], "passthrough");
        assert_eq!(v["origin_ms"], 1.7);
        assert!(v.get("object_ms").is_none() && v.get("key_sha256").is_none());
    }

    #[test]
    fn only_function_calls_report_an_origin_time() {
        let s = start("POST", "/v1/documents");
        let trace = Trace::default();
        trace.at(Stage::Gate {
            outcome: GateOutcome::Executed,
            waited: false,
        });
        let v = fields(&s.record(&trace, 201, s.at_ms, Some("handler;dur=3, gate;dur=4")));
        assert!(v.get("origin_ms").is_none());
        assert_eq!(v["object_ms"], 4.0);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_868_799_999.0), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_709_251_199_000.0), "2024-02-29T23:59:59.000Z");
        assert_eq!(rfc3339_ms(4_102_444_800_000.0), "2100-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_777_472_123.9), "2026-11-27T11:04:32.123Z");
        assert_eq!(rfc3339_ms(-5.0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn key_hashes_are_scoped_like_their_records() {
        let h = key_hash("acme:alice", "POST /v1/documents", "k");
        assert_eq!(h.len(), KEY_HASH_HEX);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(h, key_hash("acme:bob", "POST /v1/documents", "k"));
        assert_ne!(h, key_hash("acme:alice", "POST /v1/training-data", "k"));
        assert_ne!(h, key_hash("acme:alice", "POST /v1/documents", "k2"));
    }
}
