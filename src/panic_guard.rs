//! What a Rust panic leaves behind (issue 9).
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
//! instance. When the object
//! runs in another isolate than the Worker (production may do that), its requests
//! are settled by resetting the object (`state.abort`): the Worker's call to it
//! then fails with [`PANIC_ABORT_REASON`], which it answers with the same 500.
//!
//! The key of a request that died this way is released by the next `KeyGate`
//! instance (see `KeyGate::new`).

use std::sync::Once;
use wasm_bindgen::prelude::*;
use worker::worker_sys::web_sys;

#[wasm_bindgen(inline_js = r#"
// The requests in flight: each one's promise (what the Worker's `fetch`
// returned) → how to settle it and what its log line needs.
const pending = new Map();
let problem = "";
export function set_problem(body) {
  problem = body;
}
export function guard_open(requestId, method, route, startedMs) {
  let settle;
  const settled = new Promise((resolve) => { settle = resolve; });
  const request = { settle, requestId, method, route, startedMs };
  // The 500 is built here, in the request's own continuation: the runtime
  // refuses an I/O object (a Response) made on behalf of another request,
  // and the hook runs in whichever request panicked.
  const answer = settled.then((response) => response ?? died(request));
  pending.set(answer, request);
  return answer;
}
export function guard_close(answer, response) {
  const request = pending.get(answer);
  if (request !== undefined) {
    pending.delete(answer);
    request.settle(response);
  }
}
function died({ requestId, method, route, startedMs }) {
  // The request's log line, which the dead instance cannot print: the
  // fields and order of request_log's line for a request that ended in a
  // 500 `error` before it was authenticated.
  try {
    console.log(JSON.stringify({
      event: "request",
      time: new Date(startedMs).toISOString(),
      request_id: requestId,
      method,
      route,
      outcome: "error",
      status: 500,
      total_ms: Math.max(0, Date.now() - startedMs),
    }));
  } catch (e) {}
  return new Response(problem, {
    status: 500,
    headers: { "content-type": "application/problem+json", "x-request-id": requestId },
  });
}
const objects = new Map();
let nextObject = 0;
export function object_enter(state) {
  objects.set(++nextObject, state);
  return nextObject;
}
export function object_leave(id) {
  objects.delete(id);
}
export function instance_died(reason) {
  const requests = [...pending.values()];
  pending.clear();
  for (const request of requests) request.settle(undefined);
  const states = new Set(objects.values());
  objects.clear();
  // After the trap, and after the answers above have gone out: abort() cannot
  // be caught, so it must not run inside the hook.
  if (states.size > 0) {
    setTimeout(() => {
      for (const state of states) {
        try { state.abort(reason); } catch (e) {}
      }
    }, 0);
  }
}
"#)]
extern "C" {
    fn guard_open(request_id: &str, method: &str, route: &str, started_ms: f64) -> js_sys::Promise;
    fn guard_close(answer: &js_sys::Promise, response: &web_sys::Response);
    fn set_problem(body: &str);
    fn instance_died(reason: &str);
    fn object_enter(state: &JsValue) -> u32;
    fn object_leave(id: u32);
}

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
        guard_close(&settles, &answer.await);
    });
    promise
}
