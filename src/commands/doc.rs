//! What the OpenAPI document says about a keyed write beyond its template
//! (`openapi` builds the operation from it). Each command declares one as
//! [`KeyedCommand::DOC`](super::KeyedCommand::DOC), which has no default: a
//! keyed route cannot compile undocumented.

/// The key header's description for a route whose key is required.
const KEY_REQUIRED: &str = "The request's idempotency key (required)";

/// What the document says about a keyed write beyond its template.
#[derive(Debug, Clone, Copy)]
pub struct KeyedDoc {
    /// The `operationId`.
    pub id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// The request body's schema name (`FunctionBody`: any body).
    pub request: &'static str,
    pub body_required: bool,
    /// The answer on success; `None`: the origin's answer, any status.
    pub ok: Option<(u16, &'static str)>,
    /// Problems this route answers besides those every keyed write may.
    pub errors: &'static [u16],
    /// The `Idempotency-Key` header's description.
    pub key_help: &'static str,
}

impl KeyedDoc {
    /// A route with a required body, a required key and the common problems.
    pub const fn new(
        id: &'static str,
        summary: &'static str,
        tag: &'static str,
        request: &'static str,
        ok: Option<(u16, &'static str)>,
    ) -> Self {
        KeyedDoc {
            id,
            summary,
            tag,
            request,
            body_required: true,
            ok,
            errors: &[],
            key_help: KEY_REQUIRED,
        }
    }

    /// The body may be left out.
    pub const fn body_optional(self) -> Self {
        KeyedDoc {
            body_required: false,
            ..self
        }
    }

    /// Problems of this route's own (an origin's 502, a timeout's 504).
    pub const fn errors(self, errors: &'static [u16]) -> Self {
        KeyedDoc { errors, ..self }
    }

    /// The key header says more than "required" (derived, from the body, optional).
    pub const fn key_help(self, key_help: &'static str) -> Self {
        KeyedDoc { key_help, ..self }
    }
}
