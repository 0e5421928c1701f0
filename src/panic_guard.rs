//! What a Rust panic leaves behind (issue 9).
//!
//! Stable Rust builds `wasm32-unknown-unknown` with `panic = "abort"` (its std is
//! precompiled so; `worker-build --panic-unwind` needs nightly `-Zbuild-std`). A
//! panic runs the panic hook and then traps: the wasm instance is dead. worker-build's
//! shim re-instantiates it on the next call, so the isolate keeps serving, but every
//! request in flight in this isolate — the one that panicked and any other whose
//! future lived in that instance — would never settle: its client would hang.
//!
//! So the Worker's `fetch` hands the runtime a JavaScript promise that races the
//! Rust answer against a per-request signal, and the panic hook (which runs before
//! the trap, synchronously) fires every pending signal: those requests answer
//! 500 problem+json from JavaScript, without the dead instance. When the object
//! runs in another isolate than the Worker (production may do that), its requests
//! are settled by resetting the object (`state.abort`): the Worker's `fetch` to it
//! then fails with [`PANIC_ABORT_REASON`], which it answers with the same 500.
//!
//! The key of a request that died this way is released by the next `KeyGate`
//! instance (see `KeyGate::new`).

use std::sync::Once;
use wasm_bindgen::prelude::*;
use worker::worker_sys::web_sys;

#[wasm_bindgen(inline_js = r#"
const pending = new Set();
export function guard(answer, problem, requestId, logLine, startedMs) {
  let settle;
  const died = new Promise((resolve) => { settle = resolve; });
  pending.add(settle);
  const done = () => { pending.delete(settle); };
  answer.then(done, done);
  return Promise.race([answer, died.then(() => {
    // The request's log line, which the dead instance cannot print: prepared
    // by Rust on arrival (a 500 `error`), with its duration filled in here.
    try {
      const line = JSON.parse(logLine);
      line.total_ms = Math.max(0, Date.now() - startedMs);
      console.log(JSON.stringify(line));
    } catch (e) {}
    return new Response(problem, {
      status: 500,
      headers: { "content-type": "application/problem+json", "x-request-id": requestId },
    });
  })]);
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
  for (const settle of pending) settle();
  pending.clear();
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
    fn guard(
        answer: &js_sys::Promise,
        problem: &str,
        request_id: &str,
        log_line: &str,
        started_ms: f64,
    ) -> js_sys::Promise;
    fn instance_died(reason: &str);
    fn object_enter(state: &JsValue) -> u32;
    fn object_leave(id: u32);
}

/// The reason a Durable Object is reset after a panic; its callers' `fetch`
/// rejects with an error carrying it.
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
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            instance_died(PANIC_ABORT_REASON);
        }));
    });
}

/// What a request that dies with the wasm instance still leaves: its id (the
/// 500's `X-Request-Id`) and its log line (`request_log`), whose `total_ms` the
/// guard sets from `started_ms`.
pub struct OnPanic<'a> {
    pub request_id: &'a str,
    pub log_line: &'a str,
    pub started_ms: f64,
}

/// Runs `answer` as this request's response, or answers 500 problem+json if the
/// wasm instance dies (a panic) before it settles — and then prints the
/// request's log line from JavaScript. The value is the promise the Worker's
/// `fetch` export returns.
pub fn guarded<F>(answer: F, on_panic: &OnPanic<'_>) -> js_sys::Promise
where
    F: std::future::Future<Output = worker::Response> + 'static,
{
    install();
    let answer =
        wasm_bindgen_futures::future_to_promise(std::panic::AssertUnwindSafe(async move {
            Ok(web_sys::Response::from(answer.await).into())
        }));
    PROBLEM.with(|problem| {
        guard(
            &answer,
            problem,
            on_panic.request_id,
            on_panic.log_line,
            on_panic.started_ms,
        )
    })
}

thread_local! {
    /// The 500's body, the same for every request: serialised once.
    static PROBLEM: String = crate::problem::ApiError::Internal
        .to_problem()
        .body
        .to_string();
}
