//! What a Rust panic leaves behind.
//!
//! Stable Rust builds `wasm32-unknown-unknown` with `panic = "abort"` (its std is
//! precompiled so; `worker-build --panic-unwind` needs nightly `-Zbuild-std`). A
//! panic runs the panic hook and then traps: the wasm instance is dead. worker-build's
//! shim re-instantiates it on the next call, so the isolate keeps serving, but every
//! request in flight in this isolate — the one that panicked and any other whose
//! future lived in that instance — would never settle: its client would hang.
//!
//! So the Worker's `fetch` hands the runtime a JavaScript promise of its own,
//! which the Rust answer settles when it is ready; the panic hook (which runs
//! before the trap, synchronously) settles every one still pending instead:
//! those requests answer 500 problem+json from JavaScript, without the dead
//! instance (`src/js/glue.js`). When the object runs in another isolate than the
//! Worker (production may do that), its requests are settled by resetting the
//! object (`state.abort`): the Worker's call to it then fails with
//! [`PANIC_ABORT_REASON`], which it answers with the same 500.
//!
//! The key of a request that died this way is released by the next `KeyGate`
//! instance (see `KeyGate::new`).

use std::sync::Once;
use worker::worker_sys::web_sys;

use crate::js::{guard_close, guard_open, instance_died, object_enter, object_leave, set_problem};

/// The reason a Durable Object is reset after a panic; its callers' calls (RPC
/// or `fetch`) reject with an error carrying it.
pub const PANIC_ABORT_REASON: &str = "idemgate: a Rust panic killed the wasm instance";

/// Marks a Durable Object as serving a request, until dropped. If the wasm
/// instance panics meanwhile, the object is reset (`state.abort`): its requests,
/// whose futures died with the instance, then fail at their callers (another
/// isolate, in production) instead of never settling.
pub struct InFlight(u32);

impl InFlight {
    pub fn enter(state: &worker::State) -> Self {
        InFlight(object_enter(state.as_raw()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        object_leave(self.0);
    }
}

/// Chains a hook after the one workers-rs installs at start-up (it logs the panic
/// and flags the instance for re-instantiation): settle what is in flight. Once per
/// wasm instance (a re-created instance starts with fresh statics).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The 500's body, the same for every request: handed to JavaScript once.
        set_problem(
            &crate::problem::ApiError::Internal
                .to_problem()
                .body
                .to_string(),
        );
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            instance_died(PANIC_ABORT_REASON);
        }));
    });
}

/// What a request that dies with the wasm instance still leaves: its id (the
/// 500's `X-Request-Id`) and what its log line (`request_log`) needs — method,
/// route template and arrival, from which the guard also sets `total_ms`.
pub struct OnPanic<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub started_ms: f64,
}

/// Runs `answer` as this request's response, or answers 500 problem+json if the
/// wasm instance dies (a panic) before it settles — and then prints the
/// request's log line from JavaScript. The value is the promise the Worker's
/// `fetch` export returns.
pub fn guarded<F>(answer: F, on_panic: &OnPanic<'_>) -> js_sys::Promise
where
    F: std::future::Future<Output = web_sys::Response> + 'static,
{
    install();
    // One JavaScript promise per request, settled by the Rust answer or, if the
    // instance dies first, by the hook: no wasm closure, no race of promises.
    let promise = guard_open(
        on_panic.request_id,
        on_panic.method,
        on_panic.route,
        on_panic.started_ms,
    );
    let settles = promise.clone();
    wasm_bindgen_futures::spawn_local(async move {
        // `false`: the instance died first and its hook answered.
        let _ = guard_close(&settles, &answer.await);
    });
    promise
}
