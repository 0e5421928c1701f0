//! The one error type at the HTTP edge and its mapping to RFC 9457 problem+json.
//!
//! Every error response goes through [`ApiError::to_problem`]; internal causes are
//! logged by the caller and never put into `detail`.

use crate::idempotency::key::AdminPathError;
use crate::problem_types;
use serde::Serialize;
use serde_json::Value;

/// A problem type's title: its catalog entry's (a slug missing from the
/// catalog, which a unit test rules out, is titled `Error`).
pub fn title(slug: &str) -> &'static str {
    problem_types::find(slug).map_or("Error", |t| t.title)
}

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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema), schema(as = Problem))]
pub struct ProblemDetails {
    /// `/errors/<slug>`: what kind of problem, a URI reference relative to the
    /// request's URL; `GET` it for the type's description.
    #[serde(rename = "type")]
    #[cfg_attr(not(target_arch = "wasm32"), schema(format = "uri-reference"))]
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

    /// The status, the problem type's slug (an entry of
    /// [`problem_types::CATALOG`], which gives its title) and the detail.
    fn parts(&self) -> (u16, &'static str, String) {
        use ApiError::*;
        match self {
            BadRequest { slug, detail } => (400, slug, detail.clone()),
            InvalidKey { detail } => (400, "invalid-idempotency-key", detail.clone()),
            KeyRequired => (
                400,
                "idempotency-key-required",
                "this endpoint requires an Idempotency-Key header".into(),
            ),
            Unauthorized(d) => (401, "unauthorized", d.clone()),
            Forbidden(d) => (403, "forbidden", d.clone()),
            NotFound(d) => (404, "not-found", d.clone()),
            MethodNotAllowed { allow } => (
                405,
                "method-not-allowed",
                format!("allowed methods: {allow}"),
            ),
            AnswerTooLarge { limit } => (
                502,
                "answer-too-large",
                format!(
                    "the function answered with a body larger than {limit} bytes (MAX_STORED_ANSWER_BYTES); \
                     it ran once and this answer is final for this key"
                ),
            ),
            KeyInFlight { .. } => (
                409,
                "idempotency-key-in-flight",
                "a request with this idempotency key is still being processed; retry later or send Prefer: wait=N".into(),
            ),
            PayloadTooLarge { limit } => (
                413,
                "payload-too-large",
                format!("the request body exceeds {limit} bytes"),
            ),
            DataTooLarge(d) => (413, "data-too-large", d.clone()),
            UnsupportedMediaType(d) => (415, "unsupported-media-type", d.clone()),
            KeyReused { .. } => (
                422,
                "idempotency-key-reused",
                "this idempotency key was already used with a different request payload".into(),
            ),
            AuthNotConfigured => (
                503,
                "auth-not-configured",
                "neither AUTH_JWT_SECRET nor AUTH_JWKS_URL is set; authenticated routes are disabled".into(),
            ),
            AuthKeysUnavailable { .. } => (
                503,
                "auth-keys-unavailable",
                "the token's signing key is not known here and the JWKS could not be fetched; nothing was done, retry later".into(),
            ),
            StorageUnavailable => (
                503,
                "storage-unavailable",
                "the idempotency store is unavailable; nothing was written, retry later".into(),
            ),
            UpstreamUnreachable => (
                502,
                "upstream-unreachable",
                "the origin function could not be reached; nothing was stored, retry later".into(),
            ),
            UpstreamTimeout => (
                504,
                "upstream-timeout",
                "the origin function did not answer in time; nothing was stored, retry later".into(),
            ),
            UpstreamNotConfigured => (
                503,
                "upstream-not-configured",
                "UPSTREAM_BASE_URL is not set".into(),
            ),
            InvalidTransition { detail, .. } => (409, "invalid-transition", detail.clone()),
            Unprocessable { slug, detail } => (422, slug, detail.clone()),
            Misconfigured { vars } => (
                500,
                "misconfigured",
                format!(
                    "the Worker refuses to serve: {} does not parse (the reason is in the Worker's log)",
                    vars.join(", ")
                ),
            ),
            Internal => (500, "internal", "an internal error occurred".into()),
        }
    }

    /// Builds the problem document.
    pub fn to_problem(&self) -> Problem {
        let (status, slug, detail) = self.parts();
        let details = ProblemDetails {
            type_uri: problem_types::uri(slug),
            title: title(slug).into(),
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

impl Problem {
    /// Gives the problem another type, and that type's title.
    pub fn retype(&mut self, slug: &'static str) {
        self.body["type"] = Value::String(problem_types::uri(slug));
        self.body["title"] = Value::String(title(slug).into());
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
    use std::collections::BTreeSet;
    use std::path::Path;

    /// One error of each fixed variant; a new variant does not compile here
    /// until it is added (the `match` has no wildcard).
    fn fixed_variants() -> Vec<ApiError> {
        let s = String::from("x");
        let all = vec![
            ApiError::InvalidKey { detail: s.clone() },
            ApiError::KeyRequired,
            ApiError::Unauthorized(s.clone()),
            ApiError::Forbidden(s.clone()),
            ApiError::NotFound(s.clone()),
            ApiError::MethodNotAllowed { allow: s.clone() },
            ApiError::KeyInFlight { key: s.clone() },
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::UnsupportedMediaType(s.clone()),
            ApiError::DataTooLarge(s.clone()),
            ApiError::KeyReused { key: s.clone() },
            ApiError::AuthNotConfigured,
            ApiError::AuthKeysUnavailable { retry_after: 1 },
            ApiError::StorageUnavailable,
            ApiError::UpstreamUnreachable,
            ApiError::UpstreamTimeout,
            ApiError::AnswerTooLarge { limit: 1 },
            ApiError::UpstreamNotConfigured,
            ApiError::InvalidTransition {
                detail: s.clone(),
                current_state: s.clone(),
            },
            ApiError::Misconfigured { vars: vec![s] },
            ApiError::Internal,
        ];
        for e in &all {
            match e {
                ApiError::BadRequest { .. } | ApiError::Unprocessable { .. } => {
                    unreachable!("their slugs are the call sites'")
                }
                ApiError::InvalidKey { .. }
                | ApiError::KeyRequired
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed { .. }
                | ApiError::KeyInFlight { .. }
                | ApiError::PayloadTooLarge { .. }
                | ApiError::UnsupportedMediaType(_)
                | ApiError::DataTooLarge(_)
                | ApiError::KeyReused { .. }
                | ApiError::AuthNotConfigured
                | ApiError::AuthKeysUnavailable { .. }
                | ApiError::StorageUnavailable
                | ApiError::UpstreamUnreachable
                | ApiError::UpstreamTimeout
                | ApiError::AnswerTooLarge { .. }
                | ApiError::UpstreamNotConfigured
                | ApiError::InvalidTransition { .. }
                | ApiError::Misconfigured { .. }
                | ApiError::Internal => {}
            }
        }
        all
    }

    /// The string literal at the start of `text` (after white space), if any.
    fn literal(text: &str) -> Option<&str> {
        text.trim_start().strip_prefix('"')?.split('"').next()
    }

    /// The slugs the code's call sites name: `bad_request("…"`, `slug: "…"`,
    /// `retype("…")`, and the arms of a `let slug = match … };`. A call that
    /// names its slug any other way is listed in `unread`.
    fn slugs_in(code: &str, found: &mut BTreeSet<String>, unread: &mut Vec<String>) {
        for (call, arg_may_be_slug_var) in [
            ("bad_request(", true),
            ("slug: ", false),
            ("retype(", false),
        ] {
            for (i, _) in code.match_indices(call) {
                let rest = &code[i + call.len()..];
                match literal(rest) {
                    Some(slug) => {
                        found.insert(slug.to_string());
                    }
                    None if arg_may_be_slug_var && rest.starts_with("slug,") => {}
                    // A parameter's or a field's type.
                    None if call == "slug: " && rest.starts_with('&') => {}
                    None if call == "retype(" && rest.starts_with("&mut self") => {}
                    None if call == "bad_request(" && rest.starts_with("slug: ") => {}
                    None => unread.push(rest.chars().take(60).collect()),
                }
            }
        }
        for (i, _) in code.match_indices("let slug = match") {
            let block = &code[i..];
            let block = &block[..block.find("};").unwrap_or(block.len())];
            for arm in block.split("=> ").skip(1) {
                if let Some(slug) = literal(arm) {
                    found.insert(slug.to_string());
                }
            }
        }
    }

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // The code, without its unit tests (they build problems of their own).
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                out.push((path.display().to_string(), code.to_string()));
            }
        }
    }

    #[test]
    fn every_problem_type_the_code_can_send_is_in_the_catalog_and_every_entry_is_sent() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut emitted = BTreeSet::new();
        let mut unread = Vec::new();
        for (path, code) in &files {
            slugs_in(code, &mut emitted, &mut unread);
            // Type URIs are built by `problem_types::uri` only (the route
            // table names the pages' path).
            if !path.ends_with("problem_types.rs") && !path.ends_with("route_table.rs") {
                assert!(
                    !code.contains("\"/errors/") && !code.contains("idemgate.dev"),
                    "{path} writes a type URI itself"
                );
            }
        }
        assert!(
            unread.is_empty(),
            "slugs not named by a literal: {unread:?}"
        );
        for e in fixed_variants() {
            let (status, slug, _) = e.parts();
            let entry = problem_types::find(slug)
                .unwrap_or_else(|| panic!("{slug} is not in src/problem_types.rs"));
            assert!(entry.statuses.contains(&status), "{slug} {status}");
            emitted.insert(slug.to_string());
        }
        for slug in &emitted {
            assert!(
                problem_types::find(slug).is_some(),
                "{slug} can be sent but has no entry in src/problem_types.rs's CATALOG"
            );
        }
        let catalog: BTreeSet<String> = problem_types::CATALOG
            .iter()
            .map(|t| t.slug.to_string())
            .collect();
        assert_eq!(
            catalog,
            emitted,
            "catalog entries nothing sends: {:?}",
            catalog.difference(&emitted).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_slug_reader_finds_each_form_and_refuses_others() {
        let code = r#"
            ApiError::bad_request(
                "one", "d");
            Unprocessable { slug: "two", detail };
            p.retype("three");
            let slug = match e { A => "four", B | C => "five", D => return x };
            ApiError::bad_request(some_slug(), "d");
        "#;
        let (mut found, mut unread) = (BTreeSet::new(), Vec::new());
        slugs_in(code, &mut found, &mut unread);
        let want: BTreeSet<String> = ["one", "two", "three", "four", "five"]
            .map(String::from)
            .into();
        assert_eq!(found, want);
        assert_eq!(unread.len(), 1, "{unread:?}");
    }

    #[test]
    fn a_problem_s_type_is_relative_and_its_title_is_the_catalog_s() {
        let p = ApiError::bad_request("invalid-json", "x").to_problem();
        assert_eq!(p.body["type"], "/errors/invalid-json");
        assert_eq!(p.body["title"], "Invalid JSON");
        let mut p = ApiError::UpstreamUnreachable.to_problem();
        p.retype("delivery-failed");
        assert_eq!(
            (&p.body["type"], &p.body["title"]),
            (
                &Value::from("/errors/delivery-failed"),
                &Value::from("Delivery failed")
            )
        );
    }

    #[test]
    fn an_admin_path_error_is_a_bad_url_or_an_invalid_key() {
        use crate::idempotency::KeyError;
        let url = ApiError::from(AdminPathError::BadEscape).to_problem();
        assert_eq!(url.status, 400);
        assert_eq!(url.body["type"], "/errors/invalid-url");
        let key = ApiError::from(AdminPathError::Key(KeyError::DotSegment)).to_problem();
        assert_eq!(key.status, 400);
        assert_eq!(key.body["type"], "/errors/invalid-idempotency-key");
        assert_eq!(key.body["detail"], KeyError::DotSegment.to_string());
    }

    #[test]
    fn reused_key_problem_names_the_key_and_type() {
        let p = ApiError::KeyReused { key: "k1".into() }.to_problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.body["type"], "/errors/idempotency-key-reused");
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
        assert_eq!(p.body["type"], "/errors/misconfigured");
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
