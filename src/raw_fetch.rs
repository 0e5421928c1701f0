//! Outbound `fetch` to a Durable Object, and the reading of an answer's body
//! (an origin's too, from `upstream`) by one `arrayBuffer()`.
//!
//! workers-rs turns every answer into a `worker::Response` (reading its `cf` and
//! `webSocket`) and reads its body by polling a `ReadableStream` chunk by chunk,
//! each chunk a round trip between wasm and JavaScript and a reader lock taken
//! and released. The runtime's own `arrayBuffer()` reads the whole body in one
//! call. The request is built
//! directly too (workers-rs's `Request::new_with_init` converts it twice more).
//! Only the Worker side of the wire is here; what a caller does with the answer
//! stays with it.

use js_sys::futures::JsFuture;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::worker_sys::web_sys;
use worker::{Headers, Stub};

#[wasm_bindgen]
extern "C" {
    /// A Durable Object stub as the runtime hands it out.
    type ObjectStub;

    #[wasm_bindgen(method, catch)]
    fn fetch(this: &ObjectStub, request: &web_sys::Request) -> Result<js_sys::Promise, JsValue>;
}

/// An answer, its body read in full.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A request to send: `method` on `url`, with `headers` and `body`.
pub fn request(
    url: &str,
    method: &str,
    headers: &Headers,
    body: Option<&[u8]>,
) -> worker::Result<web_sys::Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(&headers.0);
    if let Some(body) = body {
        init.set_body(&js_sys::Uint8Array::from(body));
    }
    Ok(web_sys::Request::new_with_str_and_init(url, &init)?)
}

/// Sends `request` to the object behind `stub`.
pub async fn send_to_object(stub: Stub, request: &web_sys::Request) -> worker::Result<Answer> {
    read(stub.into_rpc::<ObjectStub>().fetch(request)?).await
}

async fn read(pending: js_sys::Promise) -> worker::Result<Answer> {
    let response: web_sys::Response = JsFuture::from(pending).await?.dyn_into()?;
    Ok(Answer {
        status: response.status(),
        body: body_of(&response).await?,
        headers: Headers(response.headers()).entries().collect(),
    })
}

/// An answer's whole body, by one `arrayBuffer()`.
pub async fn body_of(response: &web_sys::Response) -> Result<Vec<u8>, JsValue> {
    let body = JsFuture::from(response.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&body).to_vec())
}

/// A stream's whole content.
pub async fn stream_bytes(stream: &web_sys::ReadableStream) -> Result<Vec<u8>, JsValue> {
    body_of(&web_sys::Response::new_with_opt_readable_stream(Some(
        stream,
    ))?)
    .await
}
