//! The Worker's routes once the request takes the guarded path: health,
//! OpenAPI, console, test hooks, `OPTIONS` and `Allow`, authentication, the
//! plan's step (a passthrough, a keyed write), the reads and the key admin
//! routes.

use super::gate_client::{call_gate, GateOp};
use super::incoming::Incoming;
use super::isolate::{config, quick_passes, resolve_caller, storage, Outcome};
use super::write::{hop, keyed_write};
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
use crate::request_log::{Stage, Trace};
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
        let count = quick_passes();
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
        (["v1", "staging", "exports", _, "check"], None) => "POST, OPTIONS",
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
    let read = matches!(method, Method::Get | Method::Head);
    match (method, segments.as_slice()) {
        (_, ["v1", "staging", "exports"]) if read => {
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
        (Method::Post, ["v1", "staging", "exports", id, "check"]) => {
            let body = req.bytes().await.map_err(storage)?;
            if body.len() > cfg.max_body_bytes {
                return Err(ApiError::PayloadTooLarge {
                    limit: cfg.max_body_bytes,
                });
            }
            staging::check(&db()?, &cfg, &caller, id, &body)
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

fn require_admin(caller: &Caller) -> std::result::Result<(), ApiError> {
    if caller.has_role("admin") {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the admin role is required".into()))
    }
}
