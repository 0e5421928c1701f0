//! Names shared with `wrangler.toml`, route templates, and the configuration
//! (`design.md` §6) read from the Worker's vars through a lookup function, so
//! parsing and defaults are tested on the host.

/// Binding names: these must match `wrangler.toml`.
pub const DB_BINDING: &str = "DB";
pub const KEY_GATE_BINDING: &str = "KEY_GATE";

/// Route templates: the idempotency scope's `route` part and the fingerprint's.
pub const ROUTE_DOCUMENTS: &str = "POST /v1/documents";

/// Routes that take idempotency keys, for the key admin endpoints' `?route=`.
pub const KEYED_ROUTES: &[&str] = &[ROUTE_DOCUMENTS];

/// Resolves `?route=` (a template like `POST /v1/documents`, or just its path).
pub fn keyed_route(query: &str) -> Option<&'static str> {
    let q = query.trim();
    KEYED_ROUTES
        .iter()
        .copied()
        .find(|r| *r == q || r.split_once(' ').is_some_and(|(_, path)| path == q))
}

/// Test hooks (slow path, forced failures) are honoured only when this var is "1".
pub const TEST_HOOKS_VAR: &str = "IDEMGATE_TEST_HOOKS";
pub const AUTH_SECRET_VAR: &str = "AUTH_JWT_SECRET";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub ttl_ms: i64,
    pub lease_ms: i64,
    pub max_wait_ms: i64,
    pub max_body_bytes: usize,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
    pub test_hooks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl_ms: 86_400_000,
            lease_ms: 60_000,
            max_wait_ms: 10_000,
            max_body_bytes: 1_048_576,
            chunk_size: 1000,
            chunk_overlap: 100,
            test_hooks: false,
        }
    }
}

impl Config {
    /// Reads every setting through `var`; a missing or unparsable value keeps its
    /// default (and is reported in the returned warnings, for the log).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> (Config, Vec<String>) {
        let d = Config::default();
        let mut warnings = Vec::new();
        let mut num = |name: &str, default: i64, min: i64| -> i64 {
            match var(name) {
                None => default,
                Some(v) if v.trim().is_empty() => default,
                Some(v) => match v.trim().parse::<i64>() {
                    Ok(n) if n >= min => n,
                    _ => {
                        warnings.push(format!(
                            "{name}={v:?} is not an integer >= {min}; using {default}"
                        ));
                        default
                    }
                },
            }
        };
        let cfg = Config {
            ttl_ms: num("IDEMPOTENCY_TTL_SECONDS", d.ttl_ms / 1000, 1) * 1000,
            lease_ms: num("IDEMPOTENCY_LEASE_SECONDS", d.lease_ms / 1000, 1) * 1000,
            max_wait_ms: num("IDEMPOTENCY_MAX_WAIT_SECONDS", d.max_wait_ms / 1000, 0) * 1000,
            max_body_bytes: num("MAX_BODY_BYTES", d.max_body_bytes as i64, 1) as usize,
            chunk_size: num("CHUNK_SIZE", d.chunk_size as i64, 100) as usize,
            chunk_overlap: num("CHUNK_OVERLAP", d.chunk_overlap as i64, 0) as usize,
            test_hooks: false,
        };
        let test_hooks = var(TEST_HOOKS_VAR).as_deref() == Some("1");
        (Config { test_hooks, ..cfg }, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let (c, w) = Config::from_lookup(|_| None);
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
        assert_eq!(
            (c.ttl_ms, c.lease_ms, c.max_wait_ms, c.max_body_bytes),
            (86_400_000, 60_000, 10_000, 1_048_576)
        );
    }

    #[test]
    fn values_are_read_and_bad_ones_fall_back_with_a_warning() {
        let (c, w) = Config::from_lookup(|n| match n {
            "IDEMPOTENCY_LEASE_SECONDS" => Some("3".into()),
            "MAX_BODY_BYTES" => Some("lots".into()),
            "IDEMGATE_TEST_HOOKS" => Some("1".into()),
            _ => None,
        });
        assert_eq!(c.lease_ms, 3000);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert!(c.test_hooks);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn key_admin_route_accepts_template_or_path() {
        assert_eq!(keyed_route("POST /v1/documents"), Some(ROUTE_DOCUMENTS));
        assert_eq!(keyed_route("/v1/documents"), Some(ROUTE_DOCUMENTS));
        assert_eq!(keyed_route("/v1/nope"), None);
    }
}
