//! The Worker's `fetch`: authenticate, parse the key, validate, fingerprint, and
//! hand keyed writes to the key's `KeyGate`. Reads go straight to D1.

use crate::auth::{self, Caller};
use crate::commands::{self, key_scope, Endpoint, Keyed, ParseContext, Parsed};
use crate::config::{self, Config, AUTH_SECRET_VAR, DB_BINDING, KEY_GATE_BINDING};
use crate::console;
use crate::counters;
use crate::envelope::{Envelope, GateOutcome, ENVELOPE_HEADER};
use crate::http::{
    self, Timings, EXPIRES_HEADER, IDEMPOTENCY_EXPIRES_HEADER, OUTCOME_HEADER, REPLAY_MARKS,
    TAKEOVER_HEADER,
};
use crate::idempotency::cache::{CacheKey, Hit, ReplayCache};
use crate::idempotency::scope::{self, Scope};
use crate::idempotency::{key_from_headers, parse_prefer_wait, Fingerprint, IdempotencyKey};
use crate::idempotency::{storable_headers, StoredResponse};
use crate::problem::ApiError;
use crate::routes::{documents, functions, staging, training};
use crate::store::read_error;
use std::cell::RefCell;
use worker::{
    console_error, Context, Date, Env, Headers, Method, Request, RequestInit, Response,
    ResponseBuilder,
};

type Outcome = std::result::Result<Response, ApiError>;

/// Test hook headers (only with `IDEMGATE_TEST_HOOKS=1`).
const TEST_DELAY_HEADER: &str = "x-idemgate-test-delay-ms";
const TEST_FAIL_HEADER: &str = "x-idemgate-test-fail";

pub async fn handle(req: Request, env: Env, ctx: Context) -> Response {
    let started = Timings::now();
    let mut resp = match route(req, &env, &ctx, started).await {
        Ok(resp) => resp,
        Err(e) => http::problem(&e),
    };
    let mut timings = Timings::default();
    timings.since("worker", started);
    timings.apply(&mut resp);
    resp
}

thread_local! {
    /// Final answers seen by this isolate (see [`ReplayCache`]).
    static REPLAYS: RefCell<ReplayCache> = RefCell::new(ReplayCache::default());
}

/// The isolate's configuration (see [`config::cached`]). Settings that do not
/// parse refuse every request: 500 naming the variables, the reasons logged.
fn config(env: &Env) -> std::result::Result<Config, ApiError> {
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

/// Seconds since `started` (a [`Timings::now`]).
fn seconds_since(started: f64) -> f64 {
    (Timings::now() - started) / 1000.0
}

fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

fn cache_key(e: &Envelope) -> CacheKey {
    (e.record_scope.clone(), e.route.clone(), e.key.to_string())
}

/// Answers a keyed write from the isolate's replay cache, if it can.
fn cached_answer(ctx: &Context, env: &Env, envelope: &Envelope, started: f64) -> Option<Response> {
    let key = cache_key(envelope);
    let (response, outcome) = REPLAYS.with(|c| {
        Some(
            match c
                .borrow_mut()
                .get(&key, envelope.fingerprint_str(), now_ms())?
            {
                Hit::Replay(stored, expires_at) => {
                    let expires = http::http_date(expires_at);
                    let mut extra: Vec<(&str, &str)> = REPLAY_MARKS.to_vec();
                    extra.push(("idempotency-key", envelope.key.as_str()));
                    extra.push((IDEMPOTENCY_EXPIRES_HEADER, &expires));
                    (http::stored(stored, &extra), GateOutcome::Replayed)
                }
                Hit::Mismatch => (
                    http::problem(&ApiError::KeyReused {
                        key: envelope.key.to_string(),
                    }),
                    GateOutcome::Mismatch,
                ),
            },
        )
    })?;
    count(ctx, env, envelope, outcome.as_str(), started);
    Some(response)
}

fn storage(e: worker::Error) -> ApiError {
    console_error!("storage error: {e}");
    ApiError::StorageUnavailable
}

/// Counts `outcome` for the envelope's tenant and route template (executions
/// and replays with their duration since `started`), written behind the answer.
fn count(ctx: &Context, env: &Env, envelope: &Envelope, outcome: &str, started: f64) {
    let Ok(db) = env.d1(DB_BINDING) else {
        return;
    };
    let (scope, template) = (&envelope.scope, &envelope.template);
    if crate::metrics::TIMED.contains(&outcome) {
        counters::record_timed(ctx, db, scope, template, outcome, seconds_since(started));
    } else {
        counters::record(ctx, db, scope, template, outcome);
    }
}

fn authenticate(req: &Request, env: &Env, cfg: &Config) -> std::result::Result<Caller, ApiError> {
    let secret = env
        .secret(AUTH_SECRET_VAR)
        .map(|s| s.to_string())
        .or_else(|_| env.var(AUTH_SECRET_VAR).map(|v| v.to_string()))
        .unwrap_or_default();
    if secret.is_empty() {
        return Err(ApiError::AuthNotConfigured);
    }
    let checks = auth::ClaimChecks {
        issuer: cfg.auth_jwt_issuer.clone(),
        audience: cfg.auth_jwt_audience.clone(),
    };
    let header = req.headers().get("authorization").ok().flatten();
    let now = Date::now().as_millis() as f64 / 1000.0;
    auth::authenticate_with(header.as_deref(), secret.as_bytes(), now, &checks)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

async fn route(req: Request, env: &Env, ctx: &Context, started: f64) -> Outcome {
    // Before anything, /healthz included: a Worker whose settings do not parse
    // does not serve (a health check sees it at once).
    let cfg = config(env)?;
    let url = req
        .url()
        .map_err(|_| ApiError::bad_request("invalid-url", "unparsable URL"))?;
    let path = url.path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method();
    if segments == ["healthz"] {
        return match method {
            Method::Get | Method::Head => Ok(http::json(200, &serde_json::json!({"status": "ok"}))),
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        };
    }
    if cfg.test_hooks && segments == ["__test", "mirrors"] {
        // Test hook: the record mirrors' waiting records and D1 statements.
        let stats = crate::mirror_do::stats(env).await.map_err(storage)?;
        return Ok(http::json(
            200,
            &serde_json::json!({"waiting": stats.waiting, "statements": stats.statements}),
        ));
    }
    if segments.first() == Some(&console::PREFIX) {
        let asset = console::asset(&segments)
            .ok_or_else(|| ApiError::NotFound(format!("no route for {path}")))?;
        return match method {
            Method::Get | Method::Head => Ok(http::asset(
                &asset,
                &console::HEADERS,
                method == Method::Head,
            )),
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        };
    }
    let keyed = commands::match_path(&path);
    let allow = match (segments.as_slice(), &keyed) {
        (["v1", "training-jobs"] | ["v1", "staging", "exports"], Some(_)) => {
            "GET, HEAD, POST, OPTIONS"
        }
        (_, Some(k)) if k.endpoint.method() == "PUT" => "PUT, OPTIONS",
        (_, Some(_)) => "POST, OPTIONS",
        (
            ["v1", "documents", _]
            | ["v1", "documents", _, "chunks"]
            | ["v1", "training-data", _]
            | ["v1", "training-jobs", _]
            | ["v1", "staging", "exports", _]
            | ["v1", "staging", "exports", _, "diff" | "audit" | "file" | "preview"]
            | ["v1", "staging", "batches", _]
            | ["v1", "idempotency", "stats"]
            | ["metrics"],
            None,
        ) => "GET, HEAD, OPTIONS",
        (["v1", "idempotency", "keys", _, ..], None) => "GET, HEAD, DELETE, OPTIONS",
        _ => return Err(ApiError::NotFound(format!("no route for {path}"))),
    };
    if method == Method::Options {
        let headers = Headers::new();
        let _ = headers.set("allow", allow);
        return Ok(ResponseBuilder::new()
            .with_status(204)
            .with_headers(headers)
            .empty());
    }
    let caller = authenticate(&req, env, &cfg)?;
    let db = || env.d1(DB_BINDING).map_err(storage);
    let query = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    let page = || {
        let offset = query("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit = query("limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
            .clamp(1, 1000);
        (offset, limit)
    };
    if let Some(k) = keyed.filter(|k| method_name(&method) == k.endpoint.method()) {
        return keyed_write(req, env, ctx, &caller, &cfg, k, started).await;
    }
    let read = matches!(method, Method::Get | Method::Head);
    match (method, segments.as_slice()) {
        (_, ["v1", "staging", "exports"]) if read => {
            let (offset, limit) = page();
            staging::list(&db()?, &caller, query("status").as_deref(), offset, limit)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "staging", "exports", id]) if read => {
            staging::get(&db()?, &caller, id).await.map_err(read_error)
        }
        (_, ["v1", "staging", "exports", id, "diff"]) if read => {
            staging::get_diff(&db()?, &caller, id)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "staging", "exports", id, "audit"]) if read => {
            staging::get_audit(&db()?, &caller, id)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "staging", "exports", id, "file"]) if read => {
            staging::get_file(&db()?, &caller, id)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "staging", "exports", id, "preview"]) if read => {
            staging::get_preview(&db()?, &caller, id)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "staging", "batches", id]) if read => staging::get_batch(&db()?, &caller, id)
            .await
            .map_err(read_error),
        (_, ["v1", "documents", id]) if read => documents::get(&db()?, &caller, id)
            .await
            .map_err(read_error),
        (_, ["v1", "documents", id, "chunks"]) if read => {
            let (offset, limit) = page();
            documents::chunks(&db()?, &caller, id, offset, limit)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "training-data", id]) if read => match id.strip_suffix(".jsonl") {
            Some(id) => training::dataset_jsonl(db()?, &caller, id)
                .await
                .map_err(read_error),
            None => training::get_dataset(&db()?, &caller, id)
                .await
                .map_err(read_error),
        },
        (_, ["v1", "training-jobs"]) if read => {
            let (offset, limit) = page();
            let status = query("status");
            training::list_jobs(&db()?, &caller, status.as_deref(), offset, limit)
                .await
                .map_err(read_error)
        }
        (_, ["v1", "training-jobs", id]) if read => training::get_job(&db()?, &caller, id)
            .await
            .map_err(read_error),
        (_, ["v1", "idempotency", "stats"]) if read => {
            if !caller.has_role("admin") {
                return Err(ApiError::Forbidden("the admin role is required".into()));
            }
            crate::stats::stats(&db()?, &caller.tenant)
                .await
                .map_err(read_error)
        }
        (_, ["metrics"]) if read => {
            if !caller.has_role("admin") {
                return Err(ApiError::Forbidden("the admin role is required".into()));
            }
            crate::stats::prometheus(&db()?, &caller.tenant)
                .await
                .map_err(read_error)
        }
        (m @ (Method::Get | Method::Head | Method::Delete), ["v1", "idempotency", "keys", ..]) => {
            let raw = path.splitn(5, '/').nth(4).unwrap_or_default();
            let decoded = percent_decode(raw).ok_or_else(|| {
                ApiError::bad_request("invalid-url", "bad percent-encoding in key")
            })?;
            let key = IdempotencyKey::parse(&decoded).map_err(|e| ApiError::InvalidKey {
                detail: e.to_string(),
            })?;
            let route = query("route").ok_or_else(|| route_param_error("missing"))?;
            let keyed = commands::keyed_route(&route).ok_or_else(|| route_param_error(&route))?;
            // The key's scope, as its write computed it: a server-derived key is
            // the tenant's; a client's key is the caller's own, or — for an admin
            // naming `subject=` — another user's of the same tenant.
            let own = key_scope(keyed.endpoint, &key, &caller.tenant, &caller.sub);
            let record_scope = match (own.subject.is_some(), query("subject")) {
                (true, Some(other)) if other != caller.sub => {
                    if !caller.has_role("admin") {
                        return Err(ApiError::Forbidden(
                            "only an admin may name another user's key (subject=)".into(),
                        ));
                    }
                    Scope::client(&caller.tenant, &other)
                }
                _ => own,
            };
            let envelope = Envelope {
                scope: caller.tenant.clone(),
                record_scope: record_scope.encode(),
                route: keyed.route,
                template: keyed.endpoint.template().into(),
                param: keyed.param,
                forward: vec![],
                key,
                fingerprint: None,
                caller_sub: caller.sub.clone(),
                admin: caller.has_role("admin"),
                wait_ms: 0,
                test_delay_ms: 0,
                test_fail: None,
            };
            let op_method = if m == Method::Delete {
                Method::Delete
            } else {
                Method::Get
            };
            call_gate(env, ctx, &envelope, op_method, "state", None, started).await
        }
        _ => Err(ApiError::MethodNotAllowed { allow }),
    }
}

fn route_param_error(got: &str) -> ApiError {
    ApiError::bad_request(
        "invalid-route",
        format!(
            "query parameter route={got:?} names no keyed route; e.g. /v1/documents, /v1/training-data, \
             /v1/training-jobs, /v1/training-jobs/{{id}}/events, /v1/training-jobs/{{id}}/cancel, /functions/v1/{{name}}"
        ),
    )
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads the body, refusing more than `limit` bytes before doing any work.
async fn read_body(req: &mut Request, limit: usize) -> std::result::Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body = req.bytes().await.map_err(|_| {
        ApiError::bad_request("unreadable-body", "the request body could not be read")
    })?;
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(body)
}

/// The key from either header (400 if malformed or the two disagree).
fn request_key(req: &Request) -> std::result::Result<Option<IdempotencyKey>, ApiError> {
    let h = req.headers();
    key_from_headers(
        h.get("idempotency-key").ok().flatten().as_deref(),
        h.get("x-idempotency-key").ok().flatten().as_deref(),
    )
    .map_err(|e| ApiError::InvalidKey {
        detail: e.to_string(),
    })
}

/// A keyed write: body limit → key → validation (the command's) → fingerprint → object.
async fn keyed_write(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    caller: &Caller,
    cfg: &Config,
    keyed: Keyed,
    started: f64,
) -> Outcome {
    let body = read_body(&mut req, cfg.max_body_bytes).await?;
    let header_key = request_key(&req)?;
    let json_content = req
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let endpoint = keyed.endpoint;
    let check = ParseContext {
        cfg,
        tenant: &caller.tenant,
        subject: &caller.sub,
        roles: &caller.roles,
        json_content,
    };
    let mut forward = Vec::new();
    if endpoint == Endpoint::CallFunction {
        for name in functions::FORWARDED_HEADERS {
            if let Some(v) = req.headers().get(name).ok().flatten() {
                forward.push((name.to_string(), v));
            }
        }
    }
    // The fingerprint covers the bytes as sent; the object gets the parsed command.
    let fingerprint = |json: bool| {
        let (method, path) = endpoint.template().split_once(' ').unwrap_or_default();
        Fingerprint::compute(method, path, &body, json)
    };
    let (command, key, fingerprint) = match endpoint.parse(&keyed, &body, header_key, &check)? {
        Parsed::Keyed { command, key, json } => (command, key, fingerprint(json)),
        Parsed::Passthrough { url } => {
            return Ok(functions::passthrough(cfg, &url, &body, &forward).await);
        }
    };
    let scope = key_scope(endpoint, &key, &caller.tenant, &caller.sub);
    let mut envelope = envelope(&req, cfg, caller, &keyed, &key, &fingerprint);
    envelope.record_scope = scope.encode();
    envelope.forward = forward;
    call_gate(
        env,
        ctx,
        &envelope,
        Method::Post,
        "execute",
        Some(command.encode()?),
        started,
    )
    .await
}

fn envelope(
    req: &Request,
    cfg: &Config,
    caller: &Caller,
    keyed: &Keyed,
    key: &IdempotencyKey,
    fp: &Fingerprint,
) -> Envelope {
    let h = req.headers();
    let wait_ms = h
        .get("prefer")
        .ok()
        .flatten()
        .and_then(|p| parse_prefer_wait(&p))
        .map_or(0, |secs| {
            crate::idempotency::prefer::wait_ms(secs, cfg.max_wait_ms)
        });
    let hook = |name: &str| cfg.test_hooks.then(|| h.get(name).ok().flatten()).flatten();
    Envelope {
        scope: caller.tenant.clone(),
        record_scope: String::new(),
        route: keyed.route.clone(),
        template: keyed.endpoint.template().into(),
        param: keyed.param.clone(),
        forward: vec![],
        key: key.clone(),
        fingerprint: Some(fp.clone()),
        caller_sub: caller.sub.clone(),
        admin: caller.has_role("admin"),
        wait_ms,
        test_delay_ms: hook(TEST_DELAY_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        test_fail: hook(TEST_FAIL_HEADER),
    }
}

/// The Durable Object's name for a key: one object per (scope, route, key).
pub fn object_name(e: &Envelope) -> String {
    scope::object_name(&e.record_scope, &e.route, e.key.as_str())
}

async fn call_gate(
    env: &Env,
    ctx: &Context,
    envelope: &Envelope,
    method: Method,
    op: &str,
    body: Option<Vec<u8>>,
    started: f64,
) -> Outcome {
    let release = method == Method::Delete;
    if op == "execute" {
        if let Some(hit) = cached_answer(ctx, env, envelope, started) {
            return Ok(hit);
        }
    } else if method == Method::Delete {
        REPLAYS.with(|c| c.borrow_mut().remove(&cache_key(envelope)));
    }
    let headers = Headers::new();
    let encoded = serde_json::to_string(envelope).map_err(|_| ApiError::Internal)?;
    headers
        .set(ENVELOPE_HEADER, &encoded)
        .map_err(|_| ApiError::Internal)?;
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Some(b) = body {
        init.with_body(Some(js_sys::Uint8Array::from(b.as_slice()).into()));
    }
    let gate_req = Request::new_with_init(&format!("https://key-gate/{op}"), &init)
        .map_err(|_| ApiError::Internal)?;
    let stub = env
        .durable_object(KEY_GATE_BINDING)
        .and_then(|ns| ns.id_from_name(&object_name(envelope))?.get_stub())
        .map_err(storage)?;
    let started = Timings::now();
    let mut resp = stub
        .fetch_with_request(gate_req)
        .await
        .map_err(|e| match e.to_string() {
            // The object's wasm instance panicked and the object was reset.
            m if m.contains(crate::panic_guard::PANIC_ABORT_REASON) => {
                console_error!("KeyGate {}: {m}", envelope.route);
                ApiError::Internal
            }
            _ => storage(e),
        })?;
    // Copy the answer without the internal headers.
    let out_headers = Headers::new();
    let (mut outcome, mut expires_at, mut takeover) = (None, None, false);
    let mut kept: Vec<(String, String)> = Vec::new();
    for (name, value) in resp.headers().entries() {
        match name.as_str() {
            OUTCOME_HEADER => outcome = GateOutcome::parse(&value),
            EXPIRES_HEADER => expires_at = value.parse::<i64>().ok(),
            TAKEOVER_HEADER => takeover = true,
            _ => {
                let _ = out_headers.append(&name, &value);
                kept.push((name, value));
            }
        }
    }
    let status = resp.status_code();
    let bytes = resp.bytes().await.map_err(storage)?;
    let mut timings = Timings::default();
    timings.since("gate", started);
    if let (Some(true), Some(expires_at)) = (outcome.map(GateOutcome::is_final), expires_at) {
        let stored = StoredResponse {
            status,
            headers: storable_headers(kept.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
            body: bytes.clone(),
        };
        REPLAYS.with(|c| {
            c.borrow_mut().insert(
                cache_key(envelope),
                envelope.fingerprint_str().to_string(),
                stored,
                expires_at,
                now_ms(),
            )
        });
    }
    if let Some(at) = expires_at {
        let _ = out_headers.set(IDEMPOTENCY_EXPIRES_HEADER, &http::http_date(at));
    }
    if let Some(o) = outcome {
        count(ctx, env, envelope, o.as_str(), started);
    }
    if takeover {
        count(ctx, env, envelope, "takeover", started);
    }
    if release && status == 204 {
        count(ctx, env, envelope, "released", started);
    }
    let mut out = ResponseBuilder::new()
        .with_status(status)
        .with_headers(out_headers)
        .fixed(bytes);
    timings.apply(&mut out);
    Ok(out)
}

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Post => "POST",
        Method::Put => "PUT",
        _ => "",
    }
}
