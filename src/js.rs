//! The JavaScript the wasm calls (`src/js/glue.js`).
//!
//! wasm-bindgen 0.2.130 lists a module in its import object once for each
//! function the wasm imports from it directly (one whose arguments and result
//! need no conversion), under the same key, which esbuild then warns about on
//! every build: so at most one function here is imported directly
//! (`object_enter`), and `guard_close` is wrapped (`catch`).

use wasm_bindgen::prelude::*;
use worker::worker_sys::web_sys;

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    // The panic guard (src/panic_guard.rs).
    pub fn guard_open(
        request_id: &str,
        method: &str,
        route: &str,
        started_ms: f64,
    ) -> js_sys::Promise;
    /// Settles the request's promise with `response`: `false` if it was no
    /// longer pending (the instance died first).
    #[wasm_bindgen(catch)]
    pub fn guard_close(
        answer: &js_sys::Promise,
        response: &web_sys::Response,
    ) -> Result<bool, JsValue>;
    pub fn set_problem(body: &str);
    pub fn instance_died(reason: &str);
    pub fn object_enter(state: &JsValue) -> u32;
    pub fn object_leave(id: u32);

    // A passthrough's call to the origin (src/upstream.rs).
    /// Once per instance: the headers never copied from an origin's answer
    /// (comma-separated) and the bodies of the 504 and 502 problems.
    pub fn pass_setup(hop_by_hop: &str, timeout_problem: &str, unreachable_problem: &str);
    /// POSTs `body` to `url` with the `forward` header lines, under
    /// `AbortSignal.timeout(timeout_ms)`: resolves to the origin's answer (its
    /// hop-by-hop headers removed, the `upstream` phase appended) or the 504/502
    /// problem. With `finish`, also the `worker` phase since `started_ms` and
    /// `request_id`, and `logged(status, server_timing)` is called once it is
    /// answered. Never rejects.
    #[allow(clippy::too_many_arguments)]
    pub fn pass_through(
        body: &JsValue,
        url: &str,
        forward: &str,
        timeout_ms: f64,
        finish: bool,
        request_id: &str,
        started_ms: f64,
        logged: &JsValue,
    ) -> js_sys::Promise;

    /// A request's headers as `name:value` lines (names in lowercase, the
    /// values of a repeated name joined as `Headers.get` joins them).
    pub fn header_lines(headers: &web_sys::Headers) -> String;

    // A JWKS's fetch and a signature's check (src/frontend_worker/isolate.rs).
    /// GETs the JWKS at `url` under `AbortSignal.timeout(timeout_ms)`, sharing
    /// a fetch already under way: resolves to `ok\n<Cache-Control>\n<body>` or
    /// `error\n<why>`; never rejects.
    pub fn jwks_fetch(url: &str, timeout_ms: f64) -> js_sys::Promise;
    /// WebCrypto's `importKey("jwk", …)` (cached) and `verify`: resolves to
    /// whether `signature` signs `data`; false for a key the runtime refuses.
    pub fn jwk_verify(
        jwk: &str,
        import_params: &str,
        verify_params: &str,
        signature: &[u8],
        data: &[u8],
    ) -> js_sys::Promise;

    // Answers built in one call each (src/http.rs).
    /// Fills `headers` from `http::header_lines`: `appended` appended in order, then
    /// `replaced` set (replacing any of the same name). A name or value the
    /// runtime refuses is left out, as a refused `append` or `set` would be.
    pub fn header_fill(headers: &web_sys::Headers, appended: &str, replaced: &str);
    pub fn answer_bytes(
        status: u16,
        headers: &web_sys::Headers,
        body: &[u8],
        timing: &str,
        request_id: &str,
    ) -> web_sys::Response;
    pub fn answer_stream(
        status: u16,
        headers: &web_sys::Headers,
        body: Option<&web_sys::ReadableStream>,
        timing: &str,
        request_id: &str,
    ) -> web_sys::Response;
}
