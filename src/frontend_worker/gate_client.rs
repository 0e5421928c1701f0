//! The Worker's side of a key's object: the call (the envelope in a header,
//! the command as the body), the isolate's replay cache in front of it, and
//! the counters of what the object did.

use super::{storage, Outcome};
use crate::commands::Command;
use crate::config::KEY_GATE_BINDING;
use crate::counters;
use crate::envelope::{Envelope, GateCall, GateOutcome, ENVELOPE_HEADER};
use crate::http::{
    self, Timings, EXPIRES_HEADER, IDEMPOTENCY_EXPIRES_HEADER, OUTCOME_HEADER, REPLAY_MARKS,
    TAKEOVER_HEADER,
};
use crate::idempotency::cache::{CacheKey, Hit, ReplayCache, Sent};
use crate::idempotency::scope;
use crate::idempotency::{storable_headers, Fingerprint, StoredResponse};
use crate::problem::ApiError;
use crate::request_log::{Stage, Trace};
use std::cell::RefCell;
use worker::{console_error, Context, Date, Env, Headers, Response, ResponseBuilder};

thread_local! {
    /// Final answers seen by this isolate (see [`ReplayCache`]).
    static REPLAYS: RefCell<ReplayCache> = RefCell::new(ReplayCache::default());
}

/// Seconds since `started` (a [`Timings::now`]).
fn seconds_since(started: f64) -> f64 {
    (Timings::now() - started) / 1000.0
}

fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

/// The call as an older Worker version sends it: by method and path, the
/// envelope in a header.
async fn send_by_fetch(
    stub: worker::Stub,
    call: GateCall,
    envelope: &str,
    body: Option<&[u8]>,
) -> worker::Result<crate::raw_fetch::Answer> {
    let headers = Headers::new();
    headers.set(ENVELOPE_HEADER, envelope)?;
    let (method, path) = call.http();
    let request =
        crate::raw_fetch::request(&format!("https://key-gate{path}"), method, &headers, body)?;
    crate::raw_fetch::send_to_object(stub, &request).await
}

fn cache_key(e: &Envelope) -> CacheKey {
    (e.record_scope.clone(), e.route.clone(), e.key.to_string())
}

/// The fingerprint of a request to `key` that sends what the request
/// whose answer the isolate's replay cache holds sent: known without
/// computing it.
pub(super) fn known_fingerprint(key: &CacheKey, sent: Sent<'_>) -> Option<Fingerprint> {
    REPLAYS.with(|c| {
        c.borrow()
            .fingerprint_of(key, sent, now_ms())
            .map(Fingerprint::known)
    })
}

/// Whether the isolate's replay cache holds an answer for `(record scope,
/// route, key)` (for this payload or another): a request's body is worth
/// reading ahead for it (`quick_replay`).
pub(super) fn may_replay(key: &CacheKey) -> bool {
    REPLAYS.with(|c| c.borrow().holds(key, now_ms()))
}

/// What the isolate's replay cache answers a keyed write with.
pub(super) enum Cached<'a> {
    /// The stored answer, with the headers a replay adds.
    Stored(&'a StoredResponse, &'a [(&'a str, &'a str)]),
    /// Another payload under the key: 422.
    Mismatch(ApiError),
}

/// Answers a keyed write from the isolate's replay cache, if it can (what
/// [`call_gate`] tries first).
pub(super) fn cached_answer(
    ctx: &Context,
    env: &Env,
    envelope: &Envelope,
    trace: &Trace,
) -> Option<Response> {
    from_cache(ctx, env, envelope, trace, |cached| match cached {
        Cached::Stored(stored, extra) => http::stored(stored, extra),
        Cached::Mismatch(e) => http::problem(&e),
    })
}

/// The replay cache's answer to a keyed write, if it has one, made by
/// `render` (the request's trace already marked with the outcome), and counted.
pub(super) fn from_cache<R>(
    ctx: &Context,
    env: &Env,
    envelope: &Envelope,
    trace: &Trace,
    render: impl FnOnce(Cached<'_>) -> R,
) -> Option<R> {
    let key = cache_key(envelope);
    let (answer, outcome) = REPLAYS.with(|c| {
        let mut cache = c.borrow_mut();
        let hit = cache.get(&key, envelope.fingerprint_str(), now_ms())?;
        let at = |outcome| {
            trace.at(Stage::Gate {
                outcome,
                waited: false,
            });
            outcome
        };
        Some(match hit {
            Hit::Replay(stored, expires_at) => {
                let outcome = at(GateOutcome::Replayed);
                let expires = http::http_date(expires_at);
                let mut extra: Vec<(&str, &str)> = REPLAY_MARKS.to_vec();
                extra.push(("idempotency-key", envelope.key.as_str()));
                extra.push((IDEMPOTENCY_EXPIRES_HEADER, &expires));
                (render(Cached::Stored(stored, &extra)), outcome)
            }
            Hit::Mismatch => {
                let outcome = at(GateOutcome::Mismatch);
                let e = ApiError::KeyReused {
                    key: envelope.key.to_string(),
                };
                (render(Cached::Mismatch(e)), outcome)
            }
        })
    })?;
    count(ctx, env, envelope, outcome.as_str(), trace.started);
    Some(answer)
}

/// Counts `outcome` for the envelope's tenant and route template (executions
/// and replays with their duration since `started`), written behind the answer.
pub(super) fn count(ctx: &Context, env: &Env, envelope: &Envelope, outcome: &str, started: f64) {
    let (scope, template) = (&envelope.scope, &envelope.template);
    if crate::metrics::TIMED.contains(&outcome) {
        counters::record_timed(ctx, env, scope, template, outcome, seconds_since(started));
    } else {
        counters::record(ctx, env, scope, template, outcome);
    }
}

/// The name of the gate object that holds the envelope's key: its own, or
/// one of its tenant's `shards`.
fn object_name(e: &Envelope, shards: u32) -> String {
    scope::gate_object_name(&e.scope, &e.record_key().name(), shards)
}

/// What the Worker asks of a key's object.
pub(super) enum GateOp<'a> {
    /// Run (or replay) the command: encoded only if the isolate's replay
    /// cache does not answer first. `sent`: the request as sent, kept with a
    /// final answer in the replay cache (see [`known_fingerprint`]).
    Execute { command: Command, sent: Sent<'a> },
    /// The key's state.
    State,
    /// Release the key.
    Release,
}

/// How the Worker reaches the object.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    /// A method call (`object_rpc`): what the Worker does.
    Rpc,
    /// `fetch`, the envelope in a header: what an older Worker version does
    /// during a gradual deployment, and what a command larger than an RPC
    /// carries inline takes (`object_rpc::INLINE_MAX`); a test hook chooses it
    /// too.
    Fetch,
}

pub(super) async fn call_gate(
    env: &Env,
    ctx: &Context,
    envelope: &Envelope,
    op: GateOp<'_>,
    shards: u32,
    hop: Hop,
    trace: &Trace,
) -> Outcome {
    trace.keyed(
        &envelope.record_scope,
        &envelope.route,
        envelope.key.as_str(),
    );
    let (call, body, request) = match op {
        GateOp::Execute { command, sent } => {
            if let Some(hit) = cached_answer(ctx, env, envelope, trace) {
                return Ok(hit);
            }
            (GateCall::Execute, Some(command.encode()?), Some(sent))
        }
        GateOp::State => (GateCall::State, None, None),
        GateOp::Release => {
            REPLAYS.with(|c| c.borrow_mut().remove(&cache_key(envelope)));
            (GateCall::Release, None, None)
        }
    };
    let release = call == GateCall::Release;
    let encoded = serde_json::to_string(envelope).map_err(|_| ApiError::Internal)?;
    let stub = env
        .durable_object(KEY_GATE_BINDING)
        .and_then(|ns| ns.id_from_name(&object_name(envelope, shards))?.get_stub())
        .map_err(storage)?;
    // A command too large to go inline goes by the `fetch` form, which streams.
    let too_large = body
        .as_ref()
        .is_some_and(|b| b.len() > crate::object_rpc::INLINE_MAX);
    let hop = if too_large { Hop::Fetch } else { hop };
    let started = Timings::now();
    let sent = match hop {
        Hop::Rpc => crate::object_rpc::call(stub, call, &encoded, body.as_deref()).await,
        Hop::Fetch => send_by_fetch(stub, call, &encoded, body.as_deref()).await,
    };
    let resp = sent.map_err(|e| match e.to_string() {
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
    for (name, value) in resp.headers.entries() {
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
    let (status, bytes) = (resp.status, resp.body);
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
                request,
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
        // The object sends `Preference-Applied` only to a request that waited.
        let waited = kept.iter().any(|(n, _)| n == "preference-applied");
        trace.at(Stage::Gate { outcome: o, waited });
        count(ctx, env, envelope, o.as_str(), trace.started);
    }
    if takeover {
        count(ctx, env, envelope, "takeover", trace.started);
    }
    if release && status == 204 {
        count(ctx, env, envelope, "released", trace.started);
    }
    let mut out = ResponseBuilder::new()
        .with_status(status)
        .with_headers(out_headers)
        .fixed(bytes);
    timings.apply(&mut out);
    Ok(out)
}
