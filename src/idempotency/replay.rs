//! What is kept of a response, and which headers come back on replay.

use serde::{Deserialize, Serialize};

/// A finished response as stored (D1) and cached (Durable Object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// Allow-listed headers only, lowercase names, in the handler's order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// 2xx and 4xx (and 3xx) are final answers and are stored; 5xx is a transient
    /// failure: not stored, the key is released so a retry runs again.
    pub fn is_storable(&self) -> bool {
        self.status < 500
    }
}

/// Headers that idemgate sets itself on every answer; a stored copy would be stale
/// or duplicated, so they are never stored.
const OWN_HEADERS: &[&str] = &[
    "x-idempotency-replay",
    "x-idempotency-key",
    "idempotent-replayed",
    "idempotency-key",
];

/// Filters response headers to the replay allow-list: `content-type`, `location`,
/// `etag`, `cache-control` and application `x-*` headers (ids). Never `set-cookie`,
/// never hop-by-hop or auth-related headers.
pub fn storable_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| {
            matches!(
                n.as_str(),
                "content-type" | "location" | "etag" | "cache-control"
            ) || (n.starts_with("x-") && !OWN_HEADERS.contains(&n.as_str()))
        })
        .map(|(n, v)| (n, v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_keeps_content_headers_and_app_ids() {
        let kept = storable_headers([
            ("Content-Type", "application/json"),
            ("Location", "/v1/documents/d1"),
            ("ETag", "\"abc\""),
            ("Cache-Control", "no-store"),
            ("X-Request-Id", "r-1"),
            ("Set-Cookie", "session=secret"),
            ("Connection", "keep-alive"),
            ("Authorization", "Bearer x"),
            ("X-Idempotency-Replay", "true"),
            ("Date", "today"),
        ]);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "location",
                "etag",
                "cache-control",
                "x-request-id"
            ]
        );
    }

    #[test]
    fn final_answers_are_storable_and_5xx_is_not() {
        let r = |status| StoredResponse {
            status,
            headers: vec![],
            body: vec![],
        };
        assert!(r(200).is_storable());
        assert!(r(201).is_storable());
        assert!(r(404).is_storable());
        assert!(r(422).is_storable());
        assert!(!r(500).is_storable());
        assert!(!r(503).is_storable());
        assert!(r(302).is_storable());
    }
}
