//! Matching a request path to its keyed route: each route's template is its
//! path pattern, `{id}` and `{name}` one parameter segment.

use super::Endpoint;

/// A keyed route matched on a path: the endpoint, the concrete route (ids
/// filled in: part of the key's identity) and the path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub endpoint: Endpoint,
    pub route: String,
    pub param: Option<String>,
}

impl Endpoint {
    /// The HTTP method (`POST` or `PUT`).
    pub fn method(self) -> &'static str {
        self.template().split_once(' ').map_or("POST", |(m, _)| m)
    }

    pub(super) fn path_pattern(self) -> &'static str {
        self.template().split_once(' ').map_or("", |(_, p)| p)
    }
}

/// Path parameters (ids, function names) are limited to `A-Za-z0-9_-`.
fn is_param(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Matches a request path (without query) against the table; each path
/// belongs to at most one endpoint.
pub fn match_path(path: &str) -> Option<Keyed> {
    let path = path.trim_end_matches('/');
    Endpoint::ALL.into_iter().find_map(|endpoint| {
        // Segment by segment, as many in the pattern as in the path.
        let mut pattern = endpoint.path_pattern().split('/').skip(1);
        let mut segments = path.split('/').skip(1);
        let mut param = None;
        loop {
            match (pattern.next(), segments.next()) {
                (None, None) => break,
                (Some(p), Some(s)) if p.starts_with('{') && is_param(s) => param = Some(s),
                (Some(p), Some(s)) if p == s => {}
                _ => return None,
            }
        }
        let route = match param {
            Some(v) => endpoint.template().replace("{id}", v).replace("{name}", v),
            None => endpoint.template().to_string(),
        };
        Some(Keyed {
            endpoint,
            route,
            param: param.map(str::to_string),
        })
    })
}

/// Resolves `?route=` of the key admin endpoints: a route (`PUT /v1/staging/…`)
/// or just its path (`/v1/training-jobs/job_1/cancel`).
pub fn keyed_route(query: &str) -> Option<Keyed> {
    let q = query.trim();
    let path = q.split_once(' ').map_or(q, |(_, p)| p);
    match_path(path.trim())
}
