//! # idemgate
//!
//! A Cloudflare Worker that makes edge functions safe to retry (its contract:
//! `docs/contract.md`; how the pieces fit: `docs/architecture.md`).
//!
//! ## Components
//! - [`frontend_worker`]: the Worker's `fetch`. Authenticates ([`auth`]), parses the
//!   key, parses and validates the request into a [`commands::Command`], computes
//!   the fingerprint and the key's scope
//!   (tenant and subject, or tenant for a derived key), and sends keyed writes to
//!   the key's Durable Object with an [`envelope`]. Reads go to D1 directly.
//! - [`keygate_do`]: `KeyGate`, the SQLite-backed Durable Object that holds a
//!   key — one of the tenant's `KEYGATE_SHARDS` long-lived objects, or (with 0)
//!   one per (scope, route, key): a shell that runs the decisions of
//!   [`idempotency::gate`] (admit, renew, finish, release) per key and of
//!   [`idempotency::shard`] (the object's one alarm over its keys' due times),
//!   and the run of [`idempotency::execute`], over its SQLite ([`slot_sql`], a
//!   slot per key) and D1 ([`store::D1Records`]); renews a live holder's lease,
//!   answers waiters (`keygate_do/answers.rs`), and drops its database once no
//!   key holds anything.
//! - [`mirror_do`]: `RecordMirror`, a few long-lived objects that take the
//!   records of answers without D1 rows of their own (origin functions, stored
//!   4xx) from the key objects, durably, and write them to D1 in batches
//!   ([`idempotency::mirror`] decides, [`mirror_sql`] stores).
//! - [`routes`]: the functions behind idemgate — process-document, training data
//!   and jobs, origin functions, export staging — as handlers that return their
//!   answer and their D1 writes; [`commands`] is the table of keyed writes, one
//!   type per route (template, role, key policy, `parse`, `apply`, its OpenAPI
//!   description): the Worker parses a request once into a `Command`, the
//!   object applies it;
//!   [`upstream`] the one outbound call.
//! - [`store`]: D1 (binding `DB`): idempotency records (answers in chunks),
//!   counters, reads. [`panic_guard`]: a Rust panic answers 500 instead of hanging.
//! - Pure logic, tested on the host: [`idempotency`] (key, fingerprint, scope,
//!   admission, the object's decisions and run, replay headers, `Prefer`),
//!   [`auth`], [`documents`], [`training`], [`staging`], [`request_body`] (the
//!   JSON body rules every request parser shares), [`problem`], [`config`]
//!   (strict settings and the TTL policy), [`metrics`] (the Prometheus text).
//! - [`stats`] and [`counters`]: `/v1/idempotency/stats` and `/metrics` read
//!   records and counters by route template; the counts are written behind the
//!   answers.
//! - [`console`]: the approvers' console (`GET /console`), a static page and
//!   script compiled in, with its security headers.
//! - [`request_log`]: the one JSON line each request logs (outcome, status,
//!   durations, a hash prefix of the key), built as plain data.
//! - [`openapi`]: the OpenAPI 3.1 document (`GET /openapi.json`): the committed
//!   `openapi.json`, generated on the host from the route and command tables.
//! - [`problem_types`]: the catalog of problem types (`GET /errors/<slug>`, the
//!   pages a problem's `type` names; `docs/errors.md`).
//!
//! ## Life of a keyed request
//! 1. Worker: auth (401/503) → body limit (413) → key syntax (400) → parse into
//!    a `Command` (400/403/413/415) → fingerprint → the `KeyGate` named by the
//!    tenant and the key's hash (or by scope, route and key), with the command
//!    as its body.
//! 2. `KeyGate`: read the key's slot, decide, write lease — no `await` in between. Then
//!    execute, replay, 409 (or wait with `Prefer: wait=N`), or 422.
//! 3. On execute: the lease is renewed while the handler runs; the handler's rows
//!    and the idempotency record go to D1 in one batch (an answer without rows is
//!    final in the slot first, its record written behind); the slot keeps a hot
//!    copy; waiters receive the same answer.
//! 4. 5xx, a throw or a storage failure releases the lease; a dead holder's lease
//!    expires (alarm, or the next request), and what it committed is adopted.

pub mod auth;
pub mod clock;
pub mod commands;
pub mod config;
pub mod console;
pub mod counters;
pub mod documents;
pub mod envelope;
pub mod frontend_worker;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod js;
pub mod keygate_do;
pub mod metrics;
pub mod mirror_do;
pub mod mirror_sql;
pub mod object_rpc;
pub mod openapi;
pub mod panic_guard;
pub mod problem;
pub mod problem_types;
pub mod raw_fetch;
pub mod request_body;
pub mod request_log;
pub mod route_table;
pub mod routes;
pub mod slot_sql;
pub mod staging;
pub mod stats;
pub mod store;
pub mod training;
pub mod upstream;

use worker::{
    console_error, console_log, event, Context, Date, Env, ScheduleContext, ScheduledEvent,
};

/// Rows deleted per sweep statement, and statements per run: bounded work per cron tick.
const SWEEP_BATCH: u32 = 500;
const SWEEP_ROUNDS: u32 = 20;

/// The Worker's `fetch` export, as `#[event(fetch)]` would generate it but
/// without a future of its own: the answer is [`panic_guard`]'s promise (a
/// panic anywhere in this isolate answers 500 problem+json instead of hanging),
/// which the runtime awaits directly.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn fetch(
    req: worker::worker_sys::web_sys::Request,
    env: Env,
    ctx: worker::worker_sys::Context,
) -> js_sys::Promise {
    frontend_worker::serve(req, env, Context::new(ctx))
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    panic_guard::install();
    let now = Date::now().as_millis() as i64;
    match env.d1(config::DB_BINDING) {
        Ok(db) => {
            match store::sweep_expired(&db, now, SWEEP_BATCH, SWEEP_ROUNDS).await {
                Ok(n) => console_log!("sweep: deleted {n} expired idempotency records"),
                Err(e) => console_error!("sweep failed: {e}"),
            }
            let templates = commands::Endpoint::ALL.map(commands::Endpoint::template);
            let cfg = match config::cached(|n| env.var(n).ok().map(|v| v.to_string()), &templates) {
                Ok(cfg) => cfg,
                Err(e) => {
                    console_error!(
                        "sweep: configuration refused, nothing but expired records swept: {e}"
                    );
                    return;
                }
            };
            match routes::training::retry_dispatches(&db, &cfg, now).await {
                Ok(n) if n > 0 => console_log!("sweep: retried {n} training job dispatches"),
                Ok(_) => {}
                Err(e) => console_error!("dispatch retry failed: {e}"),
            }
            match routes::staging::expire_approvals(&db, &cfg, now).await {
                Ok(n) if n > 0 => {
                    console_log!("sweep: {n} staged exports expired (approval_timeout)")
                }
                Ok(_) => {}
                Err(e) => console_error!("approval expiry failed: {e}"),
            }
        }
        Err(e) => console_error!("sweep: no D1 binding: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::Endpoint;
    use crate::config::parse_route_ttls;

    #[test]
    fn every_route_of_the_command_table_may_have_its_own_ttl() {
        let templates = Endpoint::ALL.map(Endpoint::template);
        for c in Endpoint::ALL {
            let (_, path) = c.template().split_once(' ').unwrap();
            for spec in [format!("{path}=60"), format!("{}=60", c.template())] {
                let routes = parse_route_ttls(&spec, &templates, &[]).expect(&spec);
                assert_eq!(routes[0].template, c.template(), "{spec}");
                assert_eq!(
                    (routes[0].name.as_deref(), routes[0].ttl_ms),
                    (None, 60_000)
                );
            }
        }
        // Two routes with their own TTLs, one of them an origin function.
        let functions = ["charge".to_string()];
        let routes = parse_route_ttls(
            "/v1/documents=604800,/functions/v1/charge=3600",
            &templates,
            &functions,
        )
        .unwrap();
        assert_eq!(routes[1].template, "POST /functions/v1/{name}");
        assert_eq!(routes[1].name.as_deref(), Some("charge"));
    }
}
