//! The Worker's routes once the request takes the guarded path: health,
//! OpenAPI, console, test hooks, `OPTIONS` and `Allow`, authentication, the
//! plan's step (a passthrough, a keyed write), the reads and the key admin
//! routes.

use super::gate_client::{call_gate, GateOp};
use super::incoming::Incoming;
use super::isolate::{config, copies_used, quick_passes, resolve_caller, storage, Outcome};
use super::write::{hop, keyed_write, read_body};
use crate::auth::Caller;
use crate::commands::plan::{self, Plan, Step};
use crate::commands::{self, key_scope};
use crate::config::DB_BINDING;
use crate::console;
use crate::envelope::Envelope;
use crate::http;
use crate::idempotency::key::{key_from_admin_path, ADMIN_PATH_PREFIX};
use crate::idempotency::scope::Scope;
use crate::openapi;
use crate::problem::ApiError;
use crate::problem_types;
use crate::request_log::{Stage, Trace};
use crate::route_table::{self, Kind, Route};
use crate::routes::{documents, functions, staging, training};
use crate::store::read_error;
use crate::upstream::Outgoing;
use worker::{Context, Env, Headers, Method, ResponseBuilder};

/// The methods the router knows (any other is refused with 405, never taken for a GET).
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
];

/// `keyed`: the path's keyed route ([`commands::match_path`]).
pub(super) async fn route(
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
        let count = quick_passes();
        return Ok(http::json(200, &serde_json::json!({ "count": count })));
    }
    if cfg.test_hooks && segments == ["__test", "copies"] {
        // Test hook: how many replays this wasm instance answered from a copy.
        let count = copies_used();
        return Ok(http::json(200, &serde_json::json!({ "count": count })));
    }
    // The path's routes (the route table's) and keyed write (the command table's).
    let routes: Vec<(&'static Route, Vec<String>)> = route_table::matching(routed).collect();
    let keyed_method = keyed.as_ref().map(|k| k.endpoint.method());
    if routes.is_empty() && keyed.is_none() {
        return Err(ApiError::NotFound(format!("no route for {path}")));
    }
    let allow = route_table::allow(routes.iter().map(|(r, _)| *r), keyed_method);
    // The route serving this method (`HEAD` is served as `GET`).
    let wanted = match method {
        Method::Head => "GET",
        _ => req.method_name(),
    };
    let served = routes
        .iter()
        .find(|(r, _)| method != Method::Report && r.method.eq_ignore_ascii_case(wanted));
    // Health, this document and the console: no token, no OPTIONS.
    if routes.iter().any(|(r, _)| r.kind.is_open()) {
        let Some((route, _)) = served else {
            return Err(ApiError::MethodNotAllowed { allow });
        };
        return open_route(route.kind, &segments, method);
    }
    if method == Method::Options {
        let headers = Headers::new();
        let _ = headers.set("allow", &allow);
        return Ok(ResponseBuilder::new()
            .with_status(204)
            .with_headers(headers)
            .empty());
    }
    let resolved = resolve_caller(&req.credentials(), &cfg, Some(env)).await?;
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
    let plan = plan.unwrap_or_else(|| req.plan(keyed.as_ref(), &cfg));
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
    let Some((route, params)) = served else {
        return Err(ApiError::MethodNotAllowed { allow });
    };
    let id = params.first().map(String::as_str).unwrap_or_default();
    match route.kind {
        Kind::Health | Kind::OpenApi | Kind::Console | Kind::ProblemTypes | Kind::ProblemType => {
            open_route(route.kind, &segments, method)
        }
        Kind::ListExports => {
            let (offset, limit) = page();
            staging::list(
                &db()?,
                &cfg,
                &caller,
                query("status").as_deref(),
                offset,
                limit,
            )
            .await
            .map_err(read_error)
        }
        Kind::GetExport => staging::get(&db()?, &caller, id).await.map_err(read_error),
        Kind::GetExportDiff => staging::get_diff(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::GetExportAudit => staging::get_audit(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::GetExportFile => staging::get_file(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::GetExportPreview => staging::get_preview(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::CheckApproval => {
            let declared = plan::declared_length(&|n| req.header(n));
            let body = read_body(&req, declared, cfg.max_body_bytes).await?;
            staging::check(&db()?, &cfg, &caller, id, &body)
                .await
                .map_err(read_error)
        }
        Kind::GetBatch => staging::get_batch(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::GetDocument => documents::get(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::ListChunks => {
            let (offset, limit) = page();
            documents::chunks(&db()?, &caller, id, offset, limit)
                .await
                .map_err(read_error)
        }
        Kind::GetDatasetExamples => training::dataset_jsonl(db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::GetDataset => training::get_dataset(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::ListJobs => {
            let (offset, limit) = page();
            let status = query("status");
            training::list_jobs(&db()?, &caller, status.as_deref(), offset, limit)
                .await
                .map_err(read_error)
        }
        Kind::GetJob => training::get_job(&db()?, &caller, id)
            .await
            .map_err(read_error),
        Kind::Stats => {
            require_admin(&caller)?;
            trace.at(Stage::Admin);
            crate::stats::stats(&db()?, &caller.tenant)
                .await
                .map_err(read_error)
        }
        Kind::Me => {
            let me = openapi::Me {
                sub: caller.sub.clone(),
                tenant: caller.tenant.clone(),
                roles: caller.roles.clone(),
                via: crate::auth::credential_header(req.header("authorization").as_deref()),
            };
            Ok(http::json(
                200,
                &serde_json::to_value(me).unwrap_or_default(),
            ))
        }
        Kind::Metrics => {
            require_admin(&caller)?;
            trace.at(Stage::Admin);
            crate::stats::prometheus(&db()?, &caller.tenant)
                .await
                .map_err(read_error)
        }
        Kind::KeyState | Kind::ReleaseKey => {
            let release = route.kind == Kind::ReleaseKey;
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
                copy: false,
                fence: None,
            };
            let op = if release {
                GateOp::Release
            } else {
                GateOp::State
            };
            trace.at(Stage::Admin);
            let hop = hop(&req, &cfg);
            call_gate(env, ctx, &envelope, op, cfg.keygate_shards, hop, trace).await
        }
    }
}

/// A problem type's page (or the index), with its headers.
fn problem_page(html: String, method: Method) -> worker::Response {
    let body = if method == Method::Head {
        String::new()
    } else {
        html
    };
    let out = http::text(200, problem_types::CONTENT_TYPE, body);
    let headers = out.headers();
    for (name, value) in problem_types::HEADERS {
        let _ = headers.set(name, value);
    }
    out
}

/// The routes served without a token: health, this document, the console's
/// files, the problem types' pages.
fn open_route(kind: Kind, segments: &[&str], method: Method) -> Outcome {
    match kind {
        Kind::ProblemTypes => Ok(problem_page(problem_types::html_index(), method)),
        Kind::ProblemType => {
            let slug = segments.get(1).copied().unwrap_or_default();
            let entry = problem_types::find(slug)
                .ok_or_else(|| ApiError::NotFound(format!("no problem type {slug:?}")))?;
            Ok(problem_page(problem_types::html(entry), method))
        }
        Kind::Health => {
            let health = openapi::Health { status: "ok" };
            Ok(http::json(
                200,
                &serde_json::to_value(health).unwrap_or_default(),
            ))
        }
        Kind::OpenApi => Ok(http::text(200, http::JSON, openapi::TEXT.into())),
        _ => {
            let asset = console::asset(segments)
                .ok_or_else(|| ApiError::NotFound("no such console file".into()))?;
            Ok(http::asset(
                &asset,
                &console::HEADERS,
                method == Method::Head,
            ))
        }
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

fn require_admin(caller: &Caller) -> std::result::Result<(), ApiError> {
    if caller.has_role("admin") {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the admin role is required".into()))
    }
}
