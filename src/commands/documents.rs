//! The document upload, `POST /v1/documents` (handler: `routes::documents`).

use super::{Input, KeyedCommand, KeyedDoc, Parsed, DERIVED_PREFIX};
use crate::config::{Config, KeyPolicy};
use crate::documents::Upload;
use crate::envelope::Envelope;
use crate::idempotency::IdempotencyKey;
use crate::problem::ApiError;
use crate::routes::{documents, HandlerResult};
use serde::{Deserialize, Serialize};
use worker::D1Database;

/// A validated upload; extracting its text is the handler's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadDocument(pub Upload);

impl KeyedCommand for UploadDocument {
    const TEMPLATE: &'static str = "POST /v1/documents";
    const DOC: KeyedDoc = KeyedDoc::new(
        "uploadDocument",
        "Process a document: extract text, stats and chunks",
        "documents",
        "UploadDocument",
        Some((201, "Document")),
    )
    .key_help("The request's idempotency key; without one the server derives it from the tenant and the upload");

    fn key_policy(_: &Config) -> KeyPolicy {
        KeyPolicy::Derive
    }

    /// A derived key is the tenant's: the same upload by anyone in it is the
    /// same document.
    fn tenant_key(key: &IdempotencyKey) -> bool {
        key.as_str().starts_with(DERIVED_PREFIX)
    }

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let upload = documents::validate(input.body, input.ctx.cfg)?;
        let key = match input.header {
            Some(k) if k.as_str().starts_with(DERIVED_PREFIX) => {
                return Err(ApiError::InvalidKey {
                    detail: format!(
                        "keys starting with {DERIVED_PREFIX:?} are reserved for derived keys"
                    ),
                })
            }
            Some(key) => key,
            None => documents::derived_key(input.ctx.tenant, input.body, &upload),
        };
        Ok(Parsed::Keyed {
            command: UploadDocument(upload),
            key,
            json: true,
        })
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        documents::execute(db, env, &self.0, now)
    }
}
