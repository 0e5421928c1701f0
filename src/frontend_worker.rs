//! The Worker's `fetch`: authenticate, parse the key, validate, fingerprint, and
//! hand keyed writes to the key's `KeyGate`. Reads go straight to D1. Every
//! request ends with its log line (`request_log`).

mod gate_client;
mod incoming;
mod isolate;
mod router;
mod write;

use crate::auth::Caller;
use crate::commands::plan::Plan;
use crate::commands::{self, Keyed};
use crate::config;
use crate::http::{self, Timings};
use crate::request_log::{route_template, Stage, Start, Trace};
use crate::upstream::Outgoing;
use futures_util::FutureExt;
use incoming::Incoming;
use isolate::resolve_caller;
use worker::{console_log, Context, Env, Response};

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
    let plan = config::peek().map(|cfg| req.plan(keyed.as_ref(), &cfg));
    let start = match quick_pass(&req, plan.as_ref(), start) {
        Ok(answer) => return answer,
        Err(start) => start,
    };
    guarded(req, keyed, plan, env, ctx, start)
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
/// MAC, no JWKS or WebCrypto — its future is ready at once), a string format. The configuration must have been parsed already by
/// an earlier request ([`config::peek`]). The log line, if on, is printed after
/// the answer has gone, as the guarded path prints it.
fn quick_pass(req: &Incoming, plan: Option<&Plan>, start: Start) -> Result<js_sys::Promise, Start> {
    let Some(plan @ Plan::StreamThrough(Ok(_))) = plan else {
        return Err(start);
    };
    let Some(cfg) = config::peek() else {
        return Err(start);
    };
    // Without `env` nothing is awaited: the future is ready at once.
    let resolution = resolve_caller(&req.credentials(), &cfg, None).now_or_never();
    let Some(Ok(resolved)) = resolution else {
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
    isolate::count_quick_pass();
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
    let resp = match router::route(req, keyed, plan, &env, &ctx, &trace).await {
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
