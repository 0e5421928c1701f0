//! Names shared with `wrangler.toml` and the configuration
//! (`design.md` §6) read from the Worker's vars through a lookup function, so
//! parsing and defaults are tested on the host.

/// Binding names: these must match `wrangler.toml`.
pub const DB_BINDING: &str = "DB";
pub const KEY_GATE_BINDING: &str = "KEY_GATE";

/// What a keyed route does without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// 400 without a key.
    Required,
    /// Without a key the request passes straight through (no object, no D1).
    Optional,
    /// The server derives the key (document upload: tenant + content hash).
    Derive,
}

impl KeyPolicy {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "required" => Some(KeyPolicy::Required),
            "optional" => Some(KeyPolicy::Optional),
            _ => None,
        }
    }
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
    /// `MAX_STORED_ANSWER_BYTES`: the largest answer body stored and replayed
    /// (in chunks under the 2 MB row limit); above it the final answer is the
    /// `answer-too-large` problem.
    pub max_answer_bytes: usize,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
    pub test_hooks: bool,
    /// Origin functions fronted at `/functions/v1/{name}`.
    pub upstream_base_url: Option<String>,
    pub upstream_functions: Vec<String>,
    pub upstream_key_policy: KeyPolicy,
    pub upstream_timeout_ms: u64,
    /// Where new training jobs are dispatched, if set.
    pub trainer_url: Option<String>,
    /// Export staging (§4).
    pub staging_quality_threshold: u8,
    pub staging_approval_timeout_ms: i64,
    pub staging_max_batch_size: usize,
    /// Where posted exports are delivered, if set.
    pub destination_url: Option<String>,
    /// `AUTH_JWT_ISSUER`: when set, a token's `iss` must equal it.
    pub auth_jwt_issuer: Option<String>,
    /// `AUTH_JWT_AUDIENCE`: when set, a token's `aud` (string or array) must contain it.
    pub auth_jwt_audience: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl_ms: 86_400_000,
            lease_ms: 60_000,
            max_wait_ms: 10_000,
            max_body_bytes: 1_048_576,
            max_answer_bytes: 8 * 1024 * 1024,
            chunk_size: 1000,
            chunk_overlap: 100,
            test_hooks: false,
            upstream_base_url: None,
            upstream_functions: Vec::new(),
            upstream_key_policy: KeyPolicy::Required,
            upstream_timeout_ms: 30_000,
            trainer_url: None,
            staging_quality_threshold: 70,
            staging_approval_timeout_ms: 72 * 3_600_000,
            staging_max_batch_size: 1000,
            destination_url: None,
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
        }
    }
}

thread_local! {
    /// Vars are fixed for an isolate's life: parsed once.
    static CACHED: std::cell::OnceCell<Config> = const { std::cell::OnceCell::new() };
}

/// The isolate's configuration, read through `var` the first time (its
/// warnings go to `warn`) and shared by the Worker and its objects after that.
pub fn cached(var: impl Fn(&str) -> Option<String>, warn: impl Fn(&str)) -> Config {
    CACHED.with(|c| {
        c.get_or_init(|| {
            let (cfg, warnings) = Config::from_lookup(var);
            for w in &warnings {
                warn(w);
            }
            cfg
        })
        .clone()
    })
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
            ttl_ms: num("IDEMPOTENCY_TTL_SECONDS", d.ttl_ms / 1000, 1).saturating_mul(1000),
            lease_ms: num("IDEMPOTENCY_LEASE_SECONDS", d.lease_ms / 1000, 1).saturating_mul(1000),
            max_wait_ms: num("IDEMPOTENCY_MAX_WAIT_SECONDS", d.max_wait_ms / 1000, 0)
                .saturating_mul(1000),
            max_body_bytes: num("MAX_BODY_BYTES", d.max_body_bytes as i64, 1) as usize,
            max_answer_bytes: num("MAX_STORED_ANSWER_BYTES", d.max_answer_bytes as i64, 1) as usize,
            chunk_size: num("CHUNK_SIZE", d.chunk_size as i64, 100) as usize,
            chunk_overlap: num("CHUNK_OVERLAP", d.chunk_overlap as i64, 0) as usize,
            upstream_timeout_ms: num("UPSTREAM_TIMEOUT_MS", d.upstream_timeout_ms as i64, 1) as u64,
            staging_quality_threshold: num("STAGING_QUALITY_THRESHOLD", 70, 0).min(100) as u8,
            staging_max_batch_size: num(
                "STAGING_MAX_BATCH_SIZE",
                d.staging_max_batch_size as i64,
                1,
            ) as usize,
            ..d
        };
        let text = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let upstream_key_policy = match text("UPSTREAM_KEY_POLICY") {
            None => KeyPolicy::Required,
            Some(v) => KeyPolicy::parse(&v).unwrap_or_else(|| {
                warnings.push(format!(
                    "UPSTREAM_KEY_POLICY={v:?} is not 'required' or 'optional'; using 'required'"
                ));
                KeyPolicy::Required
            }),
        };
        let cfg = Config {
            test_hooks: var(TEST_HOOKS_VAR).as_deref() == Some("1"),
            upstream_base_url: text("UPSTREAM_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            upstream_functions: text("UPSTREAM_FUNCTIONS")
                .map(|v| {
                    v.split(',')
                        .map(|f| f.trim().to_string())
                        .filter(|f| !f.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            upstream_key_policy,
            trainer_url: text("TRAINER_URL"),
            destination_url: text("DESTINATION_URL").map(|u| u.trim_end_matches('/').to_string()),
            auth_jwt_issuer: text("AUTH_JWT_ISSUER"),
            auth_jwt_audience: text("AUTH_JWT_AUDIENCE"),
            staging_approval_timeout_ms: match text("STAGING_APPROVAL_TIMEOUT_HOURS") {
                None => d.staging_approval_timeout_ms,
                // Hours may be fractional (tests use seconds' worth).
                Some(v) => match v.parse::<f64>() {
                    Ok(h) if h > 0.0 && h.is_finite() => (h * 3_600_000.0) as i64,
                    _ => {
                        warnings.push(format!("STAGING_APPROVAL_TIMEOUT_HOURS={v:?} is not a positive number; using 72"));
                        d.staging_approval_timeout_ms
                    }
                },
            },
            ..cfg
        };
        (cfg, warnings)
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
    fn upstream_settings_are_read() {
        let (c, w) = Config::from_lookup(|n| match n {
            "UPSTREAM_BASE_URL" => Some("http://127.0.0.1:9/".into()),
            "UPSTREAM_FUNCTIONS" => Some(" echo, slow ,,".into()),
            "UPSTREAM_KEY_POLICY" => Some("optional".into()),
            "UPSTREAM_TIMEOUT_MS" => Some("1500".into()),
            "TRAINER_URL" => Some("  ".into()),
            _ => None,
        });
        assert!(w.is_empty());
        assert_eq!(c.upstream_base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(c.upstream_functions, ["echo", "slow"]);
        assert_eq!(c.upstream_key_policy, KeyPolicy::Optional);
        assert_eq!(c.upstream_timeout_ms, 1500);
        assert_eq!(c.trainer_url, None);
        let (c, w) =
            Config::from_lookup(|n| (n == "UPSTREAM_KEY_POLICY").then(|| "sometimes".into()));
        assert_eq!((c.upstream_key_policy, w.len()), (KeyPolicy::Required, 1));
    }

    #[test]
    fn jwt_issuer_and_audience_are_optional_and_read_when_set() {
        let (c, _) = Config::from_lookup(|_| None);
        assert_eq!((c.auth_jwt_issuer, c.auth_jwt_audience), (None, None));
        let (c, w) = Config::from_lookup(|n| match n {
            "AUTH_JWT_ISSUER" => Some(" https://issuer.example ".into()),
            "AUTH_JWT_AUDIENCE" => Some("idemgate".into()),
            _ => None,
        });
        assert!(w.is_empty());
        assert_eq!(c.auth_jwt_issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(c.auth_jwt_audience.as_deref(), Some("idemgate"));
        let (c, _) = Config::from_lookup(|n| (n == "AUTH_JWT_AUDIENCE").then(|| "  ".into()));
        assert_eq!(c.auth_jwt_audience, None);
    }
}
