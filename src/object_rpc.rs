//! The Worker's call to a key's object, by RPC: `serve(call, envelope, body,
//! "lines")` on the object's stub, answered with a plain object — `{status,
//! headers, body}`, the headers as one string of `name:value` lines
//! (`http::header_lines`) and the body as bytes — instead of an HTTP-style
//! `fetch` with the envelope in a header. A caller that does not name the form
//! (an older Worker version) gets the headers as `[name, value]` pairs; the
//! Worker reads either.
//!
//! Why: an RPC call costs less than a `fetch` with its request and response
//! objects (the bench's JS floor measures both kinds of hop side by side).
//!
//! workers-rs 0.8.7 exports a Rust Durable Object as a plain class, which workerd
//! serves by `fetch` only: RPC needs a class that extends `DurableObject`. So the
//! Worker's entry module, `src/entry.js`, exports such a class as `KeyGate`; it
//! holds the wasm object and forwards `serve`, `fetch` and `alarm` to it. The
//! object keeps answering `fetch` with the same handler: an older Worker version
//! still calls it so during a gradual deployment (and an e2e test, through a test
//! hook, does too).
//!
//! The runtime refuses an RPC whose serialised arguments or result exceed
//! 32 MiB. A body up to [`INLINE_MAX`] goes inline; a larger answer goes as a
//! stream (which RPC carries whatever its size), and a larger command by the
//! `fetch` form (which streams its body).
//!
//! Only the wire form lives here; both ends' logic stays in `frontend_worker`
//! and `keygate_do`.

use crate::envelope::GateCall;
use crate::idempotency::StoredResponse;
use crate::raw_fetch::{stream_bytes, Answer};
use js_sys::futures::JsFuture;
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::worker_sys::web_sys;
use worker::{Headers, Stub};

#[wasm_bindgen]
extern "C" {
    /// A `KeyGate` stub, as the runtime hands it out: its methods are RPC calls.
    type GateStub;

    /// Returns a thenable (the runtime's RPC promise), not a `Promise`.
    #[wasm_bindgen(method, catch)]
    fn serve(
        this: &GateStub,
        call: &str,
        envelope: &str,
        body: Option<Uint8Array>,
        form: &str,
    ) -> Result<JsValue, JsValue>;
}

/// The headers' form the Worker asks for: `name:value` lines.
pub const LINES: &str = "lines";

/// The largest body a call or its answer carries inline (half the runtime's
/// 32 MiB, leaving room for the rest of the value and for base64).
pub const INLINE_MAX: usize = 16 * 1024 * 1024;

const STATUS: &str = "status";
const HEADERS: &str = "headers";
const BODY: &str = "body";

/// Calls `serve` on the object behind `stub`: `call` with the encoded
/// `envelope` and, for an execute, the command as `body`.
pub async fn call(
    stub: Stub,
    call: GateCall,
    envelope: &str,
    body: Option<&[u8]>,
) -> worker::Result<Answer> {
    // Copied out of wasm memory: the runtime serialises the argument, and the
    // memory may grow (and move) before it does.
    let body = body.map(Uint8Array::from);
    let pending = stub
        .into_rpc::<GateStub>()
        .serve(call.as_str(), envelope, body, LINES)?;
    let wire = JsFuture::from(Promise::resolve(&pending)).await?;
    from_wire(&wire).await
}

fn field(wire: &JsValue, name: &str) -> worker::Result<JsValue> {
    let value = Reflect::get(wire, &JsValue::from_str(name))?;
    if value.is_undefined() {
        return Err(worker::Error::RustError(format!(
            "KeyGate answered without `{name}`"
        )));
    }
    Ok(value)
}

/// The Worker's reading of the object's answer.
async fn from_wire(wire: &JsValue) -> worker::Result<Answer> {
    let status = field(wire, STATUS)?
        .as_f64()
        .filter(|s| (100.0..=599.0).contains(s) && s.fract() == 0.0)
        .ok_or_else(|| worker::Error::RustError("KeyGate answered a bad status".into()))?;
    let headers = match field(wire, HEADERS)? {
        lines if lines.is_string() => {
            crate::http::parse_header_lines(&lines.as_string().unwrap_or_default())
        }
        // `[name, value]` pairs: an object of an older version.
        pairs => web_sys::Headers::new_with_str_sequence_sequence(&pairs)
            .map(Headers)?
            .entries()
            .collect(),
    };
    let body = match field(wire, BODY)?.dyn_into::<Uint8Array>() {
        Ok(inline) => inline.to_vec(),
        // Larger than INLINE_MAX: a stream.
        Err(other) => stream_bytes(&other.dyn_into()?).await?,
    };
    Ok(Answer {
        status: status as u16,
        headers,
        body,
    })
}

/// The object's answer in its wire form (the value its `serve` resolves to):
/// the headers as `name:value` lines if `form` is [`LINES`], else as pairs.
pub fn to_wire(answer: StoredResponse, form: Option<&str>) -> worker::Result<JsValue> {
    let StoredResponse {
        status,
        headers,
        mut body,
    } = answer;
    let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let headers: JsValue = if form == Some(LINES) {
        crate::http::header_lines(pairs).into()
    } else {
        pairs
            .map(|(n, v)| Array::of2(&n.into(), &v.into()))
            .collect::<Array>()
            .into()
    };
    let body: JsValue = if body.len() <= INLINE_MAX {
        Uint8Array::from(body.as_slice()).into()
    } else {
        // A byte stream over the bytes (copied into JavaScript first).
        let whole = web_sys::Response::new_with_opt_u8_array(Some(&mut body))?;
        whole.body().map_or(JsValue::UNDEFINED, JsValue::from)
    };
    let wire = Object::new();
    Reflect::set(&wire, &STATUS.into(), &status.into())?;
    Reflect::set(&wire, &HEADERS.into(), &headers)?;
    Reflect::set(&wire, &BODY.into(), &body)?;
    Ok(wire.into())
}
