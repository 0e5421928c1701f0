//! The Worker's side of a key's object: the call (the envelope in a header,
//! the command as the body) and the counters of what the object did. Every
//! keyed write is decided by its key's object; the isolate answers a repeat of
//! a replay from a copy only while the object has lent it one
//! ([`crate::idempotency::copies`]), so no isolate answers what the object
//! would not.

use super::isolate::{copy_of, keep_copy, storage, Outcome};
use crate::commands::Command;
use crate::config::KEY_GATE_BINDING;
use crate::counters;
use crate::envelope::{Envelope, GateCall, GateOutcome, ENVELOPE_HEADER};
use crate::http::{
    self, Timings, COPY_HEADER, EXPIRES_HEADER, IDEMPOTENCY_EXPIRES_HEADER, OUTCOME_HEADER,
    TAKEOVER_HEADER,
};
use crate::idempotency::{scope, StoredResponse};
use crate::problem::ApiError;
use crate::request_log::{Stage, Trace};
use worker::{console_error, Context, Env, Headers};

/// Seconds since `started` (a [`Timings::now`]).
fn seconds_since(started: f64) -> f64 {
    (Timings::now() - started) / 1000.0
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

/// What the Worker asks of a key's object.
pub(super) enum GateOp<'a> {
    /// Run (or replay) the command.
    Execute(&'a Command),
    /// The key's state.
    State,
    /// Release the key.
    Release,
}

impl GateOp<'_> {
    fn call(&self) -> GateCall {
        match self {
            GateOp::Execute(_) => GateCall::Execute,
            GateOp::State => GateCall::State,
            GateOp::Release => GateCall::Release,
        }
    }
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

/// The call itself: the command and the envelope encoded, sent to the key's
/// object named `object`.
async fn ask_object(
    env: &Env,
    envelope: &Envelope,
    op: GateOp<'_>,
    object: &str,
    hop: Hop,
) -> std::result::Result<crate::raw_fetch::Answer, ApiError> {
    let call = op.call();
    let body = match op {
        GateOp::Execute(command) => Some(command.encode()?),
        GateOp::State | GateOp::Release => None,
    };
    let encoded = serde_json::to_string(envelope).map_err(|_| ApiError::Internal)?;
    let stub = env
        .durable_object(KEY_GATE_BINDING)
        .and_then(|ns| ns.id_from_name(object)?.get_stub())
        .map_err(storage)?;
    // A command too large to go inline goes by the `fetch` form, which streams.
    let too_large = body
        .as_ref()
        .is_some_and(|b| b.len() > crate::object_rpc::INLINE_MAX);
    let sent = match if too_large { Hop::Fetch } else { hop } {
        Hop::Rpc => crate::object_rpc::call(stub, call, &encoded, body.as_deref()).await,
        Hop::Fetch => send_by_fetch(stub, call, &encoded, body.as_deref()).await,
    };
    sent.map_err(|e| match e.to_string() {
        // The object's wasm instance panicked and the object was reset.
        m if m.contains(crate::panic_guard::PANIC_ABORT_REASON) => {
            console_error!("KeyGate {}: {m}", envelope.route);
            ApiError::Internal
        }
        _ => storage(e),
    })
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
    let call = op.call();
    let release = call == GateCall::Release;
    let name = envelope.record_key().name();
    let started = Timings::now();
    // A replay this isolate holds a copy of, lent by the object: its answer
    // as the object would give it now (`idempotency::copies`). The tenant and
    // the key's name pick the object (with this isolate's `shards`).
    let copy_key = (envelope.copy && hop == Hop::Rpc && call == GateCall::Execute).then(|| {
        let fingerprint = envelope.fingerprint_str().to_string();
        (envelope.scope.clone(), name.clone(), fingerprint)
    });
    let resp = match copy_key.as_ref().and_then(copy_of) {
        Some(copy) => copy,
        None => {
            let object = scope::gate_object_name(&envelope.scope, &name, shards);
            let resp = ask_object(env, envelope, op, &object, hop).await?;
            let lent = resp.headers.iter().find(|(n, _)| n == COPY_HEADER);
            if let (Some(key), Some(ms)) = (copy_key, lent.and_then(|(_, v)| v.parse().ok())) {
                keep_copy(key, &resp, started, ms);
            }
            resp
        }
    };
    // The answer without the internal headers.
    let (mut outcome, mut expires_at, mut takeover) = (None, None, false);
    // The object sends `Preference-Applied` only to a request that waited.
    let mut waited = false;
    let mut headers = Vec::with_capacity(resp.headers.len());
    for (name, value) in resp.headers {
        match name.as_str() {
            OUTCOME_HEADER => outcome = GateOutcome::parse(&value),
            EXPIRES_HEADER => expires_at = value.parse::<i64>().ok(),
            TAKEOVER_HEADER => takeover = true,
            COPY_HEADER => {}
            _ => {
                waited |= name == "preference-applied";
                headers.push((name, value));
            }
        }
    }
    let status = resp.status;
    let mut timings = Timings::default();
    timings.since("gate", started);
    if let Some(at) = expires_at {
        http::set_header(
            &mut headers,
            IDEMPOTENCY_EXPIRES_HEADER,
            &http::http_date(at),
        );
    }
    if let Some(o) = outcome {
        trace.at(Stage::Gate { outcome: o, waited });
        count(ctx, env, envelope, o.as_str(), trace.started);
    }
    if takeover {
        count(ctx, env, envelope, "takeover", trace.started);
    }
    if release && status == 204 {
        count(ctx, env, envelope, "released", trace.started);
    }
    timings.apply_to(&mut headers);
    Ok(http::reply(StoredResponse {
        status,
        headers,
        body: resp.body,
    }))
}
