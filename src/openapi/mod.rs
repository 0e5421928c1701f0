//! The OpenAPI 3.1 description served at `GET /openapi.json`.
//!
//! The Worker serves the committed file `openapi.json` ([`TEXT`], compiled in).
//! That file is generated on the host from the code by [`generate`] (`./x
//! generate` writes it; a unit test fails while the committed file differs), so
//! it cannot drift from the routes, the command table or the types the Worker
//! serialises, and the wasm carries no document builder.
//!
//! Pure: no `worker::` import.

#[cfg(not(target_arch = "wasm32"))]
pub mod generate;
#[cfg(not(target_arch = "wasm32"))]
pub mod schemas;

use serde::Serialize;

/// Where the document is served (no auth).
pub const PATH: &str = "/openapi.json";

/// The committed file, relative to the repository's root.
pub const FILE: &str = "openapi.json";

/// The document as served: the committed file.
pub const TEXT: &str = include_str!("../../openapi.json");

/// `GET /healthz`: the body the Worker sends.
#[derive(Debug, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}
