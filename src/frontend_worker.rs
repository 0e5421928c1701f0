//! The Worker's `fetch`: authenticate, parse the key, validate, fingerprint, and
//! hand keyed writes to the key's `KeyGate`. Reads go straight to D1. Every
//! request ends with its log line (`request_log`).

mod gate_client;
mod incoming;

use crate::auth::{self, Caller, Resolved};
use crate::commands::plan::{self, Plan, Step};
use crate::commands::{self, key_scope, Command, Endpoint, Keyed, ParseContext, Parsed};
use crate::config::{self, Config, AUTH_SECRET_VAR, DB_BINDING};
use crate::console;
use crate::envelope::Envelope;
use crate::http::{self, Timings};
use crate::idempotency::key::{key_from_admin_path, ADMIN_PATH_PREFIX};
use crate::idempotency::scope::Scope;
use crate::idempotency::{key_from_headers, parse_prefer_wait, Fingerprint, IdempotencyKey};
use crate::openapi;
use crate::problem::ApiError;
use crate::request_log::{route_template, Stage, Start, Trace};
use crate::routes::{documents, functions, staging, training};
use crate::store::read_error;
use crate::upstream::Outgoing;
use gate_client::{call_gate, GateOp, Hop};
use incoming::Incoming;
use worker::{
    console_error, console_log, Context, Date, Env, Headers, Method, Response, ResponseBuilder,
};

type Outcome = std::result::Result<Response, ApiError>;

/// The methods the router knows (any other is refused with 405, never taken for a GET).
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
];

/// Test hook headers (only with `IDEMGATE_TEST_HOOKS=1`).
const TEST_DELAY_HEADER: &str = "x-idemgate-test-delay-ms";
const TEST_FAIL_HEADER: &str = "x-idemgate-test-fail";
/// `fetch`: reach the key's object as an older Worker version does (`Hop::Fetch`).
const TEST_HOP_HEADER: &str = "x-idemgate-test-hop";

/// The Worker's `fetch`, guarded against a panic (`panic_guard`), which then
/// still answers with the request's id and logs its line.
pub fn serve(req: worker::worker_sys::web_sys::Request, env: Env, ctx: Context) -> js_sys::Promise {
    let req = Incoming::new(req);
    // The path's keyed route, found once: for the log line's route and the router.
    let keyed = commands::match_path(req.path());
    let start = Start::new(
        crate::ids::random_hex(16),
        Timings::now(),
        req.method_name(),
        route_template(req.method_name(), req.path(), keyed.as_ref()),
    );
    // What the request is, decided once (if the isolate has its settings
    // already; otherwise by the guarded path, once it has them).
    let plan = config::peek().map(|cfg| plan_of(&req, keyed.as_ref(), &cfg));
    let start = match quick_pass(&req, plan.as_ref(), start) {
        Ok(answer) => return answer,
        Err(start) => start,
    };
    guarded(req, keyed, plan, env, ctx, start)
}

/// The request's [`Plan`], from its method, path and headers.
fn plan_of(req: &Incoming, keyed: Option<&Keyed>, cfg: &Config) -> Plan {
    Plan::of(req.method_name(), keyed, cfg, &|name| req.header(name))
}

/// The guarded path: [`handle`] under the panic guard.
fn guarded(
    req: Incoming,
    keyed: Option<Keyed>,
    plan: Option<Plan>,
    env: Env,
    ctx: Context,
    start: Start,
) -> js_sys::Promise {
    let (id, method, route) = (
        start.request_id.clone(),
        start.method.clone(),
        start.route.clone(),
    );
    let on_panic = crate::panic_guard::OnPanic {
        request_id: &id,
        method: &method,
        route: &route,
        started_ms: start.at_ms,
    };
    crate::panic_guard::guarded(handle(req, keyed, plan, env, ctx, start), &on_panic)
}

/// The quick passthrough: an origin function's call that streams straight
/// through ([`Plan::StreamThrough`]) from a caller this isolate has verified
/// before ([`Plan::quick`]), answered by [`crate::upstream::pass`], which
/// settles the answer itself: no Rust future, no await, no panic guard's
/// promise. `Err` gives `start` back for everything else, which takes the
/// guarded path; that path acts on the same plan and the same resolution of
/// the caller, so it would answer the same.
///
/// It runs outside the panic guard, so it runs nothing that parses what a
/// client sent: the plan's header reads and integer parse, a map lookup for
/// the token ([`resolve_caller`] without verifying: no base64, no JSON, no
/// MAC), a string format. The configuration must have been parsed already by
/// an earlier request ([`config::peek`]). The log line, if on, is printed after
/// the answer has gone, as the guarded path prints it.
fn quick_pass(req: &Incoming, plan: Option<&Plan>, start: Start) -> Result<js_sys::Promise, Start> {
    let Some(plan @ Plan::StreamThrough(Ok(_))) = plan else {
        return Err(start);
    };
    let Some(cfg) = config::peek() else {
        return Err(start);
    };
    let Ok(resolved) = resolve_caller(req.header("authorization").as_deref(), &cfg, None) else {
        return Err(start);
    };
    let Some((pass, Caller { tenant, .. })) = plan.quick(&resolved) else {
        return Err(start);
    };
    let (request_id, started_ms) = (start.request_id.clone(), start.at_ms);
    let logged = cfg.request_log.then(|| {
        wasm_bindgen::closure::Closure::once_into_js(move |status: u16, server_timing: String| {
            let trace = Trace::new(start.at_ms);
            trace.authenticated(&tenant);
            trace.at(Stage::Passthrough);
            let log = start.record(&trace, status, Timings::now(), Some(&server_timing));
            console_log!("{}", log.line());
        })
    });
    crate::panic_guard::install();
    QUICK_PASSES.with(|n| n.set(n.get() + 1));
    let body = Outgoing::Stream(req.body_stream());
    let finish = crate::upstream::Finish {
        request_id: &request_id,
        started_ms,
        logged,
    };
    Ok(crate::upstream::pass(
        &cfg,
        &pass.url,
        body,
        &pass.forward,
        Some(finish),
    ))
}

async fn handle(
    req: Incoming,
    keyed: Option<commands::Keyed>,
    plan: Option<Plan>,
    env: Env,
    ctx: Context,
    start: Start,
) -> worker::worker_sys::web_sys::Response {
    let trace = Trace::new(start.at_ms);
    let resp = match route(req, keyed, plan, &env, &ctx, &trace).await {
        Ok(resp) => resp,
        Err(e) => http::problem(&e),
    };
    finish(resp, &start, &trace)
}

/// The Worker's answer as it leaves: its `worker` phase, its request id and,
/// if on, its log line.
fn finish(resp: Response, start: &Start, trace: &Trace) -> worker::worker_sys::web_sys::Response {
    let timing = leaving(start, trace, resp.status_code(), || {
        resp.headers().get("server-timing").ok().flatten()
    });
    http::answer(resp, &timing, &start.request_id)
}

/// What every answer does as it leaves: the `Server-Timing` entry of the
/// Worker's own phase, returned, and the log line (if on), which states the
/// answer's `status` and its `Server-Timing` as it leaves (`theirs`, the
/// answer's own, if any, then ours).
fn leaving(
    start: &Start,
    trace: &Trace,
    status: u16,
    theirs: impl FnOnce() -> Option<String>,
) -> String {
    let mut timings = Timings::default();
    timings.since("worker", start.at_ms);
    let timing = timings.header();
    if config::request_log_enabled() {
        let server_timing = match theirs() {
            Some(theirs) => format!("{theirs}, {timing}"),
            None => timing.clone(),
        };
        let log = start.record(trace, status, Timings::now(), Some(&server_timing));
        console_log!("{}", log.line());
    }
    timing
}

/// The isolate's configuration (see [`config::cached`]). Settings that do not
/// parse refuse every request: 500 naming the variables, the reasons logged.
fn config(env: &Env) -> std::result::Result<std::rc::Rc<Config>, ApiError> {
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

fn storage(e: worker::Error) -> ApiError {
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
    /// Passthroughs answered by [`quick_pass`] (read by a test hook).
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
fn resolve_caller(
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

/// `keyed`: the path's keyed route ([`commands::match_path`]).
async fn route(
    req: Incoming,
    keyed: Option<commands::Keyed>,
    plan: Option<Plan>,
    env: &Env,
    ctx: &Context,
    trace: &Trace,
) -> Outcome {
    // Before anything, /healthz included: a Worker whose settings do not parse
    // does not serve (a health check sees it at once).
    let cfg = config(env)?;
    // The path as workers-rs cut it from the serialized URL; the URL is parsed
    // only for a route that reads its query.
    let path = req.path().to_string();
    // A trailing `/` is dropped, except under the key admin prefix, where it
    // is part of the key (`a/`, or a key made of slashes).
    let routed = if path.starts_with(ADMIN_PATH_PREFIX) {
        path.as_str()
    } else {
        path.trim_end_matches('/')
    };
    let segments: Vec<&str> = routed.split('/').skip(1).collect();
    // workers-rs reads a method it does not know (QUERY, PROPFIND) as GET. Such a
    // method goes on as REPORT, which no route allows: each answers 405 with its Allow.
    let method = match req.method_name() {
        m if KNOWN_METHODS.contains(&m) => req.method(),
        _ => Method::Report,
    };
    if segments == ["healthz"] {
        return match method {
            Method::Get | Method::Head => {
                let health = openapi::schemas::Health { status: "ok" };
                Ok(http::json(
                    200,
                    &serde_json::to_value(health).unwrap_or_default(),
                ))
            }
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        };
    }
    if path == openapi::PATH {
        return match method {
            Method::Get | Method::Head => Ok(http::text(200, http::JSON, openapi::json_text())),
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
    if cfg.test_hooks && segments == ["__test", "quick-passes"] {
        // Test hook: how many passthroughs this wasm instance answered by
        // `quick_pass` (a test tells the paths apart by it).
        let count = QUICK_PASSES.with(|n| n.get());
        return Ok(http::json(200, &serde_json::json!({ "count": count })));
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
    let resolved = resolve_caller(req.header("authorization").as_deref(), &cfg, Some(env))?;
    let caller = plan::caller(&resolved)?;
    trace.authenticated(&caller.tenant);
    let db = || {
        trace.reading();
        env.d1(DB_BINDING).map_err(storage)
    };
    let query = |name: &str| {
        req.url()?
            .query_pairs()
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
    let plan = plan.unwrap_or_else(|| plan_of(&req, keyed.as_ref(), &cfg));
    match plan.guarded(&resolved) {
        Step::Refused(e) => return Err(e),
        Step::Pass(pass) => {
            // Its body streams on to the origin unread.
            trace.at(Stage::Passthrough);
            let body = Outgoing::Stream(req.body_stream());
            return Ok(functions::passthrough(&cfg, &pass.url, body, &pass.forward).await);
        }
        Step::Write(k) => return keyed_write(req, env, ctx, &caller, &cfg, k.clone(), trace).await,
        Step::Route => {}
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
            require_admin(&caller)?;
            trace.at(Stage::Admin);
            crate::stats::stats(&db()?, &caller.tenant)
                .await
                .map_err(read_error)
        }
        (_, ["metrics"]) if read => {
            require_admin(&caller)?;
            trace.at(Stage::Admin);
            crate::stats::prometheus(&db()?, &caller.tenant)
                .await
                .map_err(read_error)
        }
        (m @ (Method::Get | Method::Head | Method::Delete), ["v1", "idempotency", "keys", ..]) => {
            let key = key_from_admin_path(&path)?;
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
                fence: None,
            };
            let op = if m == Method::Delete {
                GateOp::Release
            } else {
                GateOp::State
            };
            trace.at(Stage::Admin);
            let hop = hop(&req, &cfg);
            call_gate(env, ctx, &envelope, op, cfg.keygate_shards, hop, trace).await
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

/// Reads the body, refusing more than `limit` bytes before doing any work
/// (`declared`: its `Content-Length`).
async fn read_body(
    req: &Incoming,
    declared: Option<usize>,
    limit: usize,
) -> std::result::Result<Vec<u8>, ApiError> {
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
fn request_key(req: &Incoming) -> std::result::Result<Option<IdempotencyKey>, ApiError> {
    key_from_headers(
        req.header("idempotency-key").as_deref(),
        req.header("x-idempotency-key").as_deref(),
    )
    .map_err(|e| ApiError::InvalidKey {
        detail: e.to_string(),
    })
}

/// A keyed write's headers, each read once (a read is a call into JavaScript).
struct WriteHeaders {
    declared: Option<usize>,
    /// Its error waits until the body limit has had its say (413 before 400).
    key: std::result::Result<Option<IdempotencyKey>, ApiError>,
    content_type: Option<String>,
    /// The headers an origin function's call passes on (none for another).
    forward: Vec<(String, String)>,
}

impl WriteHeaders {
    fn read(req: &Incoming, endpoint: Endpoint) -> Self {
        let header = |name| req.header(name);
        let forward = if endpoint == Endpoint::CallFunction {
            plan::forwarded(&header)
        } else {
            Vec::new()
        };
        WriteHeaders {
            declared: plan::declared_length(&header),
            key: request_key(req),
            content_type: req.header("content-type"),
            forward,
        }
    }
}

/// What a keyed write asks for, once its body is read.
enum Prepared {
    /// The key's object.
    Gate {
        envelope: Box<Envelope>,
        command: Command,
    },
    /// An origin function's call without a key, its body read already.
    Passthrough {
        url: String,
        forward: Vec<(String, String)>,
    },
}

/// A keyed write: body limit → key → validation (the command's) → fingerprint → object.
async fn keyed_write(
    req: Incoming,
    env: &Env,
    ctx: &Context,
    caller: &Caller,
    cfg: &Config,
    keyed: Keyed,
    trace: &Trace,
) -> Outcome {
    let heads = WriteHeaders::read(&req, keyed.endpoint);
    let body = read_body(&req, heads.declared, cfg.max_body_bytes).await?;
    match prepare(&req, cfg, caller, &keyed, heads, &body)? {
        Prepared::Passthrough { url, forward } => {
            trace.at(Stage::Passthrough);
            Ok(functions::passthrough(cfg, &url, Outgoing::Bytes(&body), &forward).await)
        }
        Prepared::Gate { envelope, command } => {
            call_gate(
                env,
                ctx,
                &envelope,
                GateOp::Execute(&command),
                cfg.keygate_shards,
                hop(&req, cfg),
                trace,
            )
            .await
        }
    }
}

/// A keyed write with its body read (within the limit): the key, the
/// command's validation, the fingerprint, the envelope.
fn prepare(
    req: &Incoming,
    cfg: &Config,
    caller: &Caller,
    keyed: &Keyed,
    heads: WriteHeaders,
    body: &[u8],
) -> std::result::Result<Prepared, ApiError> {
    let endpoint = keyed.endpoint;
    let json_content = heads
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let check = ParseContext {
        cfg,
        tenant: &caller.tenant,
        subject: &caller.sub,
        roles: &caller.roles,
        json_content,
    };
    let (command, key, json) = match endpoint.parse(keyed, body, heads.key?, &check)? {
        Parsed::Keyed { command, key, json } => (command, key, json),
        Parsed::Passthrough { url } => {
            return Ok(Prepared::Passthrough {
                url,
                forward: heads.forward,
            })
        }
    };
    let record_scope = key_scope(endpoint, &key, &caller.tenant, &caller.sub).encode();
    // The fingerprint covers the bytes as sent; the object gets the parsed
    // command.
    let (method, path) = endpoint.template().split_once(' ').unwrap_or_default();
    let fingerprint = Fingerprint::compute(method, path, body, json, heads.content_type.as_deref());
    let mut envelope = envelope(req, cfg, caller, keyed, &key, &fingerprint);
    envelope.record_scope = record_scope;
    envelope.forward = heads.forward;
    Ok(Prepared::Gate {
        envelope: Box::new(envelope),
        command,
    })
}

fn envelope(
    req: &Incoming,
    cfg: &Config,
    caller: &Caller,
    keyed: &Keyed,
    key: &IdempotencyKey,
    fp: &Fingerprint,
) -> Envelope {
    let wait_ms = req
        .header("prefer")
        .and_then(|p| parse_prefer_wait(&p))
        .map_or(0, |secs| {
            crate::idempotency::prefer::wait_ms(secs, cfg.max_wait_ms)
        });
    let hook = |name: &'static str| cfg.test_hooks.then(|| req.header(name)).flatten();
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
        fence: None,
    }
}

/// How this request reaches its key's object: by RPC, unless the test hook
/// asks for the `fetch` form.
fn hop(req: &Incoming, cfg: &Config) -> Hop {
    let by_fetch = cfg.test_hooks && req.header(TEST_HOP_HEADER).as_deref() == Some("fetch");
    if by_fetch {
        Hop::Fetch
    } else {
        Hop::Rpc
    }
}

fn require_admin(caller: &Caller) -> std::result::Result<(), ApiError> {
    if caller.has_role("admin") {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the admin role is required".into()))
    }
}
