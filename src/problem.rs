//! The one error type at the HTTP edge and its mapping to RFC 9457 problem+json.
//!
//! Every error response goes through [`ApiError::to_problem`]; internal causes are
//! logged by the caller and never put into `detail`.

use crate::idempotency::key::AdminPathError;
use serde::Serialize;
use serde_json::Value;

/// Base of the problem `type` URIs.
pub const PROBLEM_BASE: &str = "https://idemgate.dev/errors/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 with a specific problem type slug.
    BadRequest {
        slug: &'static str,
        detail: String,
    },
    /// 400: the key header is malformed (or the two headers disagree).
    InvalidKey {
        detail: String,
    },
    /// 400: the route requires a key and none was sent.
    KeyRequired,
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed {
        allow: String,
    },
    /// 409: a request with this key is still running.
    KeyInFlight {
        key: String,
    },
    PayloadTooLarge {
        limit: usize,
    },
    UnsupportedMediaType(String),
    /// 413: data that fits the body limit but not the storage rows it must go to.
    DataTooLarge(String),
    /// 422: the key was used with another payload.
    KeyReused {
        key: String,
    },
    /// 503: neither `AUTH_JWT_SECRET` nor `AUTH_JWKS_URL` is configured;
    /// authenticated routes fail closed.
    AuthNotConfigured,
    /// 503: the token's key is not held and the JWKS could not be fetched;
    /// retry after this many seconds.
    AuthKeysUnavailable {
        retry_after: u32,
    },
    /// 503: D1 or the Durable Object could not be reached or failed.
    StorageUnavailable,
    /// 502: the origin function could not be reached.
    UpstreamUnreachable,
    /// 504: the origin function did not answer within `UPSTREAM_TIMEOUT_MS`.
    UpstreamTimeout,
    /// 502: the answer exceeds `MAX_STORED_ANSWER_BYTES`; stored as final so
    /// a retry never runs the work again.
    AnswerTooLarge {
        limit: usize,
    },
    /// 503: `/functions/v1/*` is used but `UPSTREAM_BASE_URL` is not set.
    UpstreamNotConfigured,
    /// 409: a workflow transition that the current state does not allow.
    InvalidTransition {
        detail: String,
        current_state: String,
    },
    /// 422: the request is well-formed but refers to something unusable.
    Unprocessable {
        slug: &'static str,
        detail: String,
    },
    /// 500: a setting does not parse (`config::ConfigErrors`); every request is
    /// refused until it is fixed. Names the variables; the reasons go to the log.
    Misconfigured {
        vars: Vec<String>,
    },
    Internal,
}

/// The RFC 9457 problem document every error answer carries, as sent
/// (`application/problem+json`); the OpenAPI document's `Problem` schema is
/// derived from this type.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// `https://idemgate.dev/errors/<slug>`: what kind of problem.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub type_uri: String,
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    pub detail: String,
    /// The key, on idempotency-key-in-flight and idempotency-key-reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The export's state, on invalid-transition and delivery-failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_state: Option<String>,
}

/// A problem document ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u32>,
    pub allow: Option<String>,
}

impl ApiError {
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            slug,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.parts().0
    }

    fn parts(&self) -> (u16, &'static str, &'static str, String) {
        use ApiError::*;
        match self {
            BadRequest { slug, detail } => (400, slug, "Bad request", detail.clone()),
            InvalidKey { detail } => (400, "invalid-idempotency-key", "Invalid idempotency key", detail.clone()),
            KeyRequired => (
                400,
                "idempotency-key-required",
                "Idempotency key required",
                "this endpoint requires an Idempotency-Key header".into(),
            ),
            Unauthorized(d) => (401, "unauthorized", "Unauthorized", d.clone()),
            Forbidden(d) => (403, "forbidden", "Forbidden", d.clone()),
            NotFound(d) => (404, "not-found", "Not found", d.clone()),
            MethodNotAllowed { allow } => (
                405,
                "method-not-allowed",
                "Method not allowed",
                format!("allowed methods: {allow}"),
            ),
            AnswerTooLarge { limit } => (
                502,
                "answer-too-large",
                "Answer too large",
                format!(
                    "the function answered with a body larger than {limit} bytes (MAX_STORED_ANSWER_BYTES); \
                     it ran once and this answer is final for this key"
                ),
            ),
            KeyInFlight { .. } => (
                409,
                "idempotency-key-in-flight",
                "Request in progress",
                "a request with this idempotency key is still being processed; retry later or send Prefer: wait=N".into(),
            ),
            PayloadTooLarge { limit } => (
                413,
                "payload-too-large",
                "Payload too large",
                format!("the request body exceeds {limit} bytes"),
            ),
            DataTooLarge(d) => (413, "data-too-large", "Data too large to store", d.clone()),
            UnsupportedMediaType(d) => (415, "unsupported-media-type", "Unsupported media type", d.clone()),
            KeyReused { .. } => (
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this idempotency key was already used with a different request payload".into(),
            ),
            AuthNotConfigured => (
                503,
                "auth-not-configured",
                "Authentication not configured",
                "neither AUTH_JWT_SECRET nor AUTH_JWKS_URL is set; authenticated routes are disabled".into(),
            ),
            AuthKeysUnavailable { .. } => (
                503,
                "auth-keys-unavailable",
                "Signing keys unavailable",
                "the token's signing key is not known here and the JWKS could not be fetched; nothing was done, retry later".into(),
            ),
            StorageUnavailable => (
                503,
                "storage-unavailable",
                "Storage unavailable",
                "the idempotency store is unavailable; nothing was written, retry later".into(),
            ),
            UpstreamUnreachable => (
                502,
                "upstream-unreachable",
                "Upstream unreachable",
                "the origin function could not be reached; nothing was stored, retry later".into(),
            ),
            UpstreamTimeout => (
                504,
                "upstream-timeout",
                "Upstream timeout",
                "the origin function did not answer in time; nothing was stored, retry later".into(),
            ),
            UpstreamNotConfigured => (
                503,
                "upstream-not-configured",
                "Upstream not configured",
                "UPSTREAM_BASE_URL is not set".into(),
            ),
            InvalidTransition { detail, .. } => (409, "invalid-transition", "Invalid state transition", detail.clone()),
            Unprocessable { slug, detail } => (422, slug, "Unprocessable request", detail.clone()),
            Misconfigured { vars } => (
                500,
                "misconfigured",
                "Worker misconfigured",
                format!(
                    "the Worker refuses to serve: {} does not parse (the reason is in the Worker's log)",
                    vars.join(", ")
                ),
            ),
            Internal => (500, "internal", "Internal error", "an internal error occurred".into()),
        }
    }

    /// Builds the problem document.
    pub fn to_problem(&self) -> Problem {
        let (status, slug, title, detail) = self.parts();
        let details = ProblemDetails {
            type_uri: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            status,
            detail,
            idempotency_key: match self {
                ApiError::KeyInFlight { key } | ApiError::KeyReused { key } => Some(key.clone()),
                _ => None,
            },
            current_state: match self {
                ApiError::InvalidTransition { current_state, .. } => Some(current_state.clone()),
                _ => None,
            },
        };
        // A struct of strings and integers: serialising it cannot fail.
        let body = serde_json::to_value(&details).unwrap_or(Value::Null);
        let retry_after = match self {
            ApiError::KeyInFlight { .. } => Some(1),
            ApiError::StorageUnavailable | ApiError::AuthNotConfigured => Some(5),
            ApiError::AuthKeysUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        };
        let allow = match self {
            ApiError::MethodNotAllowed { allow } => Some(allow.clone()),
            _ => None,
        };
        Problem {
            status,
            body,
            retry_after,
            allow,
        }
    }
}

/// A key admin path that names no key: a bad escape is a bad URL, a decoded
/// text that is not a key is an invalid key.
impl From<AdminPathError> for ApiError {
    fn from(e: AdminPathError) -> Self {
        match e {
            AdminPathError::BadEscape => ApiError::bad_request("invalid-url", e.to_string()),
            AdminPathError::Key(k) => ApiError::InvalidKey {
                detail: k.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_path_error_is_a_bad_url_or_an_invalid_key() {
        use crate::idempotency::KeyError;
        let url = ApiError::from(AdminPathError::BadEscape).to_problem();
        assert_eq!(url.status, 400);
        assert_eq!(url.body["type"], "https://idemgate.dev/errors/invalid-url");
        let key = ApiError::from(AdminPathError::Key(KeyError::DotSegment)).to_problem();
        assert_eq!(key.status, 400);
        assert_eq!(
            key.body["type"],
            "https://idemgate.dev/errors/invalid-idempotency-key"
        );
        assert_eq!(key.body["detail"], KeyError::DotSegment.to_string());
    }

    #[test]
    fn reused_key_problem_names_the_key_and_type() {
        let p = ApiError::KeyReused { key: "k1".into() }.to_problem();
        assert_eq!(p.status, 422);
        assert_eq!(
            p.body["type"],
            "https://idemgate.dev/errors/idempotency-key-reused"
        );
        assert_eq!(p.body["idempotency_key"], "k1");
        assert_eq!(p.body["status"], 422);
        assert!(p.body["title"].is_string() && p.body["detail"].is_string());
    }

    #[test]
    fn in_flight_problem_asks_to_retry_after_one_second() {
        let p = ApiError::KeyInFlight { key: "k".into() }.to_problem();
        assert_eq!((p.status, p.retry_after), (409, Some(1)));
    }

    #[test]
    fn a_misconfigured_worker_names_the_variables_but_not_their_values() {
        let p = ApiError::Misconfigured {
            vars: vec!["IDEMPOTENCY_ROUTE_TTLS".into()],
        }
        .to_problem();
        assert_eq!(p.status, 500);
        assert_eq!(p.body["type"], "https://idemgate.dev/errors/misconfigured");
        assert!(p.body["detail"]
            .as_str()
            .unwrap()
            .contains("IDEMPOTENCY_ROUTE_TTLS"));
    }

    #[test]
    fn storage_failures_are_503_with_retry_after() {
        let p = ApiError::StorageUnavailable.to_problem();
        assert_eq!(p.status, 503);
        assert!(p.retry_after.is_some());
        assert_eq!(ApiError::AuthNotConfigured.status(), 503);
        let p = ApiError::AuthKeysUnavailable { retry_after: 17 }.to_problem();
        assert_eq!((p.status, p.retry_after), (503, Some(17)));
    }
}
