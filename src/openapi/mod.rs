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

/// `GET /v1/me`: the caller as the Worker resolved the token (the claim
/// pointers applied), which the console shows and decides its buttons by.
#[derive(Debug, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema), schema(as = Caller))]
pub struct Me {
    /// The token's `sub`.
    pub sub: String,
    /// The tenant (`AUTH_TENANT_CLAIM`'s value, else `sub`).
    pub tenant: String,
    /// The roles (`AUTH_ROLES_CLAIM`'s value).
    pub roles: Vec<String>,
    /// The header the token came in: `authorization` (`Authorization: Bearer`)
    /// or `access` (`Cf-Access-Jwt-Assertion`, Cloudflare Access).
    pub via: &'static str,
}

/// `GET /healthz`: the body the Worker sends.
#[derive(Debug, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}
