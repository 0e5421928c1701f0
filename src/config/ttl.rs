//! The TTL policy (`docs/contract.md`, "Stored answers and TTLs"): how long a
//! stored answer is kept — a default (`IDEMPOTENCY_TTL_SECONDS`), per-route overrides
//! (`IDEMPOTENCY_ROUTE_TTLS`, parsed here against the command table's
//! templates) and a shorter TTL for 4xx answers (`IDEMPOTENCY_TTL_4XX_SECONDS`).

use super::parse_int;

/// The longest TTL any setting may ask for: ten years. Expiry times stay exact
/// in D1 (bound as f64) and printable as an HTTP-date.
pub const MAX_TTL_SECONDS: i64 = 10 * 365 * 86_400;

/// How long a stored answer is kept and replayed (`docs/contract.md`, "Stored answers and TTLs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerTtl {
    /// 2xx, 3xx and final 5xx answers (e.g. `answer-too-large`).
    pub default_ms: i64,
    /// 4xx answers: a client that fixed its mistake may retry the key after this.
    pub client_error_ms: i64,
}

impl AnswerTtl {
    /// The TTL of an answer with `status`.
    pub fn for_status(self, status: u16) -> i64 {
        if (400..500).contains(&status) {
            self.client_error_ms
        } else {
            self.default_ms
        }
    }
}

/// One entry of `IDEMPOTENCY_ROUTE_TTLS`: a route template of the command table,
/// or — for a `{name}` template (origin functions) — one concrete name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTtl {
    /// The template as the command table names it (`POST /functions/v1/{name}`).
    pub template: String,
    /// The concrete `{name}` (`charge`), or none for the whole template.
    pub name: Option<String>,
    pub ttl_ms: i64,
}

/// The TTL policy: a default, per-route overrides, and a shorter TTL for 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlPolicy {
    pub default_ms: i64,
    pub client_error_ms: i64,
    pub routes: Vec<RouteTtl>,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default_ms: 86_400_000,
            client_error_ms: 300_000,
            routes: Vec::new(),
        }
    }
}

impl TtlPolicy {
    /// The TTLs of answers on a route of `template` whose path parameter is
    /// `param`: the most specific entry wins (a concrete function name, then its
    /// template, then the default); a 4xx answer never lives longer than a 2xx
    /// one of the same route.
    pub fn for_route(&self, template: &str, param: Option<&str>) -> AnswerTtl {
        let entry = |concrete: bool| {
            self.routes.iter().find(|r| {
                r.template == template
                    && match (&r.name, concrete) {
                        (Some(n), true) => Some(n.as_str()) == param,
                        (None, false) => true,
                        _ => false,
                    }
            })
        };
        let default_ms = entry(true)
            .or_else(|| entry(false))
            .map_or(self.default_ms, |r| r.ttl_ms);
        AnswerTtl {
            default_ms,
            client_error_ms: self.client_error_ms.min(default_ms),
        }
    }
}

/// Parses `IDEMPOTENCY_ROUTE_TTLS`: comma-separated `route=seconds` entries.
/// A route is a template's path (`/v1/documents`, `/v1/training-jobs/{id}/events`),
/// optionally with its method (`POST /v1/documents`), or an origin function by
/// name (`/functions/v1/charge`, which must be in `functions`). `routes` are the
/// command table's templates.
pub fn parse_route_ttls(
    spec: &str,
    routes: &[&str],
    functions: &[String],
) -> Result<Vec<RouteTtl>, String> {
    let mut out: Vec<RouteTtl> = Vec::new();
    for entry in spec.split(',') {
        let entry = entry.trim();
        let Some((route, secs)) = entry.split_once('=') else {
            return Err(format!(
                "entry {entry:?} is not route=seconds (e.g. /v1/documents=604800)"
            ));
        };
        let (route, secs) = (route.trim(), secs.trim());
        let seconds = parse_int(secs, 1, MAX_TTL_SECONDS)
            .map_err(|why| format!("the TTL of {route:?}: {secs:?} {why}"))?;
        let (template, name) = resolve_route(route, routes, functions)?;
        if out.iter().any(|r| r.template == template && r.name == name) {
            return Err(format!("{route:?} is listed twice"));
        }
        out.push(RouteTtl {
            template,
            name,
            ttl_ms: seconds * 1000,
        });
    }
    Ok(out)
}

/// The template (and concrete `{name}`) a route of `IDEMPOTENCY_ROUTE_TTLS` names.
fn resolve_route(
    route: &str,
    routes: &[&str],
    functions: &[String],
) -> Result<(String, Option<String>), String> {
    let (method, path) = match route.split_once(' ') {
        Some((m, p)) => (Some(m.trim()), p.trim()),
        None => (None, route),
    };
    let known = || {
        let paths: Vec<&str> = routes
            .iter()
            .filter_map(|t| t.split_once(' ').map(|(_, p)| p))
            .collect();
        paths.join(", ")
    };
    let segments: Vec<&str> = path.split('/').collect();
    for template in routes {
        let Some((t_method, t_path)) = template.split_once(' ') else {
            continue;
        };
        let pattern: Vec<&str> = t_path.split('/').collect();
        if pattern.len() != segments.len()
            || pattern.iter().zip(&segments).any(|(p, s)| {
                p != s && !(p.starts_with('{') && !s.is_empty() && !s.starts_with('{'))
            })
        {
            continue;
        }
        if method.is_some_and(|m| m != t_method) {
            return Err(format!(
                "route {route:?}: its method is {t_method}, not {}",
                method.unwrap_or_default()
            ));
        }
        // Filled-in parameters: only an origin function's `{name}` may be named.
        let filled: Vec<(&str, &str)> = pattern
            .iter()
            .zip(&segments)
            .filter(|(p, s)| p != s)
            .map(|(p, s)| (*p, *s))
            .collect();
        return match filled.as_slice() {
            [] => Ok((template.to_string(), None)),
            [("{name}", name)] => {
                if !functions.iter().any(|f| f == name) {
                    return Err(format!(
                        "route {route:?}: function {name:?} is not in UPSTREAM_FUNCTIONS"
                    ));
                }
                Ok((template.to_string(), Some(name.to_string())))
            }
            _ => Err(format!(
                "route {route:?}: ids are generated, so name the template ({t_path}), not one id"
            )),
        };
    }
    Err(format!(
        "route {route:?} is no keyed route; the routes are: {}",
        known()
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A few templates as the command table names them.
    pub(in crate::config) const ROUTES: [&str; 5] = [
        "POST /v1/documents",
        "POST /v1/training-jobs/{id}/events",
        "POST /functions/v1/{name}",
        "PUT /v1/staging/exports/{id}/approve",
        "POST /v1/staging/batches",
    ];

    fn policy(spec: &str, functions: &[&str]) -> TtlPolicy {
        let functions: Vec<String> = functions.iter().map(|f| f.to_string()).collect();
        TtlPolicy {
            default_ms: 86_400_000,
            client_error_ms: 300_000,
            routes: parse_route_ttls(spec, &ROUTES, &functions).unwrap(),
        }
    }

    #[test]
    fn route_ttls_name_templates_or_an_origin_function_and_the_most_specific_wins() {
        let p = policy(
            " /v1/documents=604800, /functions/v1/charge=3600 ,\
             POST /functions/v1/{name}=7200,/v1/training-jobs/{id}/events=60",
            &["charge", "refund"],
        );
        let ttl = |template: &str, param: Option<&str>| p.for_route(template, param);
        assert_eq!(ttl("POST /v1/documents", None).default_ms, 604_800_000);
        // A concrete function beats its template, which beats the default.
        assert_eq!(
            ttl("POST /functions/v1/{name}", Some("charge")).default_ms,
            3_600_000
        );
        assert_eq!(
            ttl("POST /functions/v1/{name}", Some("refund")).default_ms,
            7_200_000
        );
        assert_eq!(ttl("POST /v1/staging/batches", None).default_ms, 86_400_000);
        let events = ttl("POST /v1/training-jobs/{id}/events", Some("job_1"));
        assert_eq!(events.default_ms, 60_000);
        // 4xx answers expire sooner, but never later than the route's 2xx.
        assert_eq!(ttl("POST /v1/documents", None).client_error_ms, 300_000);
        assert_eq!(events.client_error_ms, 60_000);
        assert_eq!(events.for_status(201), 60_000);
        assert_eq!(ttl("POST /v1/documents", None).for_status(404), 300_000);
        assert_eq!(ttl("POST /v1/documents", None).for_status(502), 604_800_000);
    }

    #[test]
    fn a_bad_route_ttl_list_is_refused_with_the_reason() {
        let functions = ["charge".to_string()];
        for (spec, why) in [
            ("/v1/nope=60", "no keyed route"),
            ("/v1/documents", "route=seconds"),
            ("/v1/documents=", "not an integer"),
            ("/v1/documents=0", "not an integer"),
            ("/v1/documents=-1", "not an integer"),
            ("/v1/documents=1h", "not an integer"),
            ("/v1/documents=99999999999999999999", "not an integer"),
            ("/v1/documents=60,", "route=seconds"),
            ("/v1/documents=60,,/functions/v1/charge=5", "route=seconds"),
            ("/v1/documents=60;/functions/v1/charge=5", "not an integer"),
            ("/v1/documents=60,/v1/documents=70", "listed twice"),
            ("PUT /v1/documents=60", "method is POST"),
            ("/functions/v1/chrage=60", "not in UPSTREAM_FUNCTIONS"),
            ("/v1/training-jobs/job_1/events=60", "ids are generated"),
            ("/v1/documents/=60", "no keyed route"),
            ("v1/documents=60", "no keyed route"),
        ] {
            let e = parse_route_ttls(spec, &ROUTES, &functions).expect_err(spec);
            assert!(e.contains(why), "{spec}: {e}");
        }
    }
}
