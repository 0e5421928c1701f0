//! Names shared with `wrangler.toml` and the configuration (the README's
//! "Configuration" table) read from the Worker's vars through a lookup
//! function, so parsing and defaults are tested on the host.
//!
//! A setting that does not parse is an error naming its variable, never a
//! silent default: the Worker then answers every request 500 (see
//! `frontend_worker`) until the configuration is fixed.

use std::fmt;

/// Binding names: these must match `wrangler.toml`.
pub const DB_BINDING: &str = "DB";
pub const KEY_GATE_BINDING: &str = "KEY_GATE";
/// How many gate objects hold a tenant's keys (0: one per key).
pub const SHARDS_VAR: &str = "KEYGATE_SHARDS";
pub const RECORD_MIRROR_BINDING: &str = "RECORD_MIRROR";
/// How many record mirrors carry write-behind records to D1 (keys hashed over
/// them). Changing it moves keys to other mirrors: a record waiting in its old
/// mirror still reaches D1, but a release then misses it — change it only with
/// the mirrors drained.
pub const RECORD_MIRRORS: u32 = 2;

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
/// How long a Worker isolate may keep a copy of a replay (ms).
pub const REPLAY_CACHE_VAR: &str = "REPLAY_CACHE_MS";
/// The longest copy: every release may wait this long.
pub const MAX_REPLAY_CACHE_MS: i64 = 10_000;
pub const AUTH_SECRET_VAR: &str = "AUTH_JWT_SECRET";
pub const JWKS_URL_VAR: &str = "AUTH_JWKS_URL";
pub const TENANT_CLAIM_VAR: &str = "AUTH_TENANT_CLAIM";
pub const ROLES_CLAIM_VAR: &str = "AUTH_ROLES_CLAIM";
pub const TTL_VAR: &str = "IDEMPOTENCY_TTL_SECONDS";
pub const TTL_4XX_VAR: &str = "IDEMPOTENCY_TTL_4XX_SECONDS";
pub const ROUTE_TTLS_VAR: &str = "IDEMPOTENCY_ROUTE_TTLS";

mod ttl;
pub use ttl::{parse_route_ttls, AnswerTtl, RouteTtl, TtlPolicy, MAX_TTL_SECONDS};

/// A setting that does not parse: its variable, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub detail: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.detail)
    }
}

/// Every setting that did not parse (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The variables named, for a short message.
    pub fn vars(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.var.as_str()).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `IDEMPOTENCY_TTL_SECONDS`, `IDEMPOTENCY_TTL_4XX_SECONDS`, `IDEMPOTENCY_ROUTE_TTLS`.
    pub ttl: TtlPolicy,
    pub lease_ms: i64,
    pub max_wait_ms: i64,
    /// `REPLAY_CACHE_MS`: how long a Worker isolate may keep a copy of a
    /// replay its key's object lent it (0: no copies;
    /// `idempotency::copies`).
    pub replay_cache_ms: i64,
    pub max_body_bytes: usize,
    /// `MAX_STORED_ANSWER_BYTES`: the largest answer body stored and replayed
    /// (in chunks under the 2 MB row limit); above it the final answer is the
    /// `answer-too-large` problem.
    pub max_answer_bytes: usize,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
    /// `KEYGATE_SHARDS`: 0 = one gate object per key; N = each tenant's keys
    /// hashed into N long-lived gate objects (`idempotency::shard`).
    pub keygate_shards: u32,
    /// `REQUEST_LOG`: `json` (the default) prints each request's line
    /// (`request_log`); `off` prints none (errors are still logged).
    pub request_log: bool,
    pub test_hooks: bool,
    /// Origin functions fronted at `/functions/v1/{name}`.
    pub upstream_base_url: Option<String>,
    pub upstream_functions: Vec<String>,
    pub upstream_key_policy: KeyPolicy,
    pub upstream_timeout_ms: u64,
    /// Where new training jobs are dispatched, if set.
    pub trainer_url: Option<String>,
    /// Export staging (`docs/staging.md`).
    pub staging_quality_threshold: u8,
    pub staging_approval_timeout_ms: i64,
    /// `STAGING_SECOND_APPROVAL=amount_changes`: an approval whose corrections
    /// change an amount waits for a second approver (`off` by default).
    pub staging_second_approval: bool,
    pub staging_max_batch_size: usize,
    /// Where posted exports are delivered, if set.
    pub destination_url: Option<String>,
    /// `AUTH_JWT_ISSUER`: when set, a token's `iss` must equal it.
    pub auth_jwt_issuer: Option<String>,
    /// `AUTH_JWT_AUDIENCE`: when set, a token's `aud` (string or array) must contain it.
    pub auth_jwt_audience: Option<String>,
    /// `AUTH_JWKS_URL`: when set, RS256, ES256 and EdDSA tokens are verified
    /// with the key of this JWKS whose `kid` is theirs (`auth::jwks`).
    pub auth_jwks_url: Option<String>,
    /// `AUTH_TENANT_CLAIM`, `AUTH_ROLES_CLAIM`: JSON Pointers to the tenant and
    /// the roles in a token's claims (`/tenant`, `/roles` by default).
    pub auth_claims: crate::auth::ClaimMapping,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: TtlPolicy::default(),
            lease_ms: 60_000,
            max_wait_ms: 10_000,
            replay_cache_ms: 1_000,
            max_body_bytes: 1_048_576,
            max_answer_bytes: 8 * 1024 * 1024,
            chunk_size: 1000,
            chunk_overlap: 100,
            keygate_shards: 8,
            request_log: true,
            test_hooks: false,
            upstream_base_url: None,
            upstream_functions: Vec::new(),
            upstream_key_policy: KeyPolicy::Required,
            upstream_timeout_ms: 30_000,
            trainer_url: None,
            staging_quality_threshold: 70,
            staging_approval_timeout_ms: 72 * 3_600_000,
            staging_second_approval: false,
            staging_max_batch_size: 1000,
            destination_url: None,
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
            auth_jwks_url: None,
            auth_claims: crate::auth::ClaimMapping::default(),
        }
    }
}

thread_local! {
    /// Vars are fixed for an isolate's life: parsed once.
    static CACHED: std::cell::OnceCell<Result<std::rc::Rc<Config>, ConfigErrors>> =
        const { std::cell::OnceCell::new() };
}

/// The isolate's configuration, read through `var` the first time (`routes`:
/// the command table's templates, which `IDEMPOTENCY_ROUTE_TTLS` may name) and
/// shared by the Worker and its objects after that.
pub fn cached(
    var: impl Fn(&str) -> Option<String>,
    routes: &[&str],
) -> Result<std::rc::Rc<Config>, ConfigErrors> {
    CACHED.with(|c| {
        c.get_or_init(|| Config::from_lookup(var, routes).map(std::rc::Rc::new))
            .clone()
    })
}

/// The isolate's configuration if a request has parsed and accepted it; none
/// before that, or when it was refused (the request that asks then parses it, or
/// answers the refusal: [`cached`]).
pub fn peek() -> Option<std::rc::Rc<Config>> {
    CACHED.with(|c| c.get().and_then(|r| r.as_ref().ok()).cloned())
}

/// Whether request lines are printed (`REQUEST_LOG`), from the isolate's parsed
/// configuration without copying it; `true` until it is parsed, and when it does
/// not parse (that request's 500 is logged too).
pub fn request_log_enabled() -> bool {
    CACHED.with(|c| {
        c.get()
            .and_then(|r| r.as_ref().ok())
            .is_none_or(|c| c.request_log)
    })
}

/// Reads settings through a lookup, collecting every error.
struct Reader<F> {
    var: F,
    errors: Vec<ConfigError>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The trimmed value, or none if unset or blank.
    fn text(&self, name: &str) -> Option<String> {
        (self.var)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, name: &str, detail: String) {
        self.errors.push(ConfigError {
            var: name.to_string(),
            detail,
        });
    }

    /// An integer in `min..=max`, or `default` when unset.
    fn int(&mut self, name: &str, default: i64, min: i64, max: i64) -> i64 {
        let Some(v) = self.text(name) else {
            return default;
        };
        match parse_int(&v, min, max) {
            Ok(n) => n,
            Err(why) => {
                self.fail(name, format!("{v:?} {why}"));
                default
            }
        }
    }
}

/// Whether `AUTH_JWKS_URL` is a URL the Worker can fetch: `https://` or
/// `http://`, a host, no blanks.
fn jwks_url_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// A decimal integer in `min..=max` (digits only, an optional leading `-`).
pub(crate) fn parse_int(v: &str, min: i64, max: i64) -> Result<i64, String> {
    let range = || format!("is not an integer from {min} to {max}");
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(range());
    }
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(range()),
    }
}

impl Config {
    /// Reads every setting through `var`: unset or blank keeps the default; a
    /// value that does not parse is an error naming its variable (all of them
    /// are reported). `routes`: the command table's templates.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
        routes: &[&str],
    ) -> Result<Config, ConfigErrors> {
        let d = Config::default();
        let mut r = Reader {
            var,
            errors: Vec::new(),
        };
        let secs = 1000;
        let ttl_default = r.int(TTL_VAR, d.ttl.default_ms / secs, 1, MAX_TTL_SECONDS) * secs;
        let ttl_4xx = r.int(
            TTL_4XX_VAR,
            d.ttl.client_error_ms / secs,
            1,
            MAX_TTL_SECONDS,
        ) * secs;
        let lease_ms = r.int("IDEMPOTENCY_LEASE_SECONDS", d.lease_ms / secs, 1, 86_400) * secs;
        let max_wait_ms = r.int(
            "IDEMPOTENCY_MAX_WAIT_SECONDS",
            d.max_wait_ms / secs,
            0,
            3_600,
        ) * secs;
        let replay_cache_ms = r.int(REPLAY_CACHE_VAR, d.replay_cache_ms, 0, MAX_REPLAY_CACHE_MS);
        let max_body_bytes = r.int("MAX_BODY_BYTES", d.max_body_bytes as i64, 1, 1 << 30) as usize;
        let max_answer_bytes = r.int(
            "MAX_STORED_ANSWER_BYTES",
            d.max_answer_bytes as i64,
            1,
            1 << 30,
        ) as usize;
        let chunk_size = r.int("CHUNK_SIZE", d.chunk_size as i64, 100, 20_000) as usize;
        let chunk_overlap = r.int("CHUNK_OVERLAP", d.chunk_overlap as i64, 0, 10_000) as usize;
        let keygate_shards = r.int(SHARDS_VAR, d.keygate_shards.into(), 0, 1024) as u32;
        let request_log = match r.text("REQUEST_LOG").as_deref() {
            None | Some("json") => true,
            Some("off") => false,
            Some(v) => {
                let detail = format!("{v:?} is not 'json' or 'off'");
                r.fail("REQUEST_LOG", detail);
                true
            }
        };
        let upstream_timeout_ms = r.int(
            "UPSTREAM_TIMEOUT_MS",
            d.upstream_timeout_ms as i64,
            1,
            3_600_000,
        ) as u64;
        let staging_quality_threshold = r.int(
            "STAGING_QUALITY_THRESHOLD",
            d.staging_quality_threshold.into(),
            0,
            100,
        ) as u8;
        let staging_max_batch_size = r.int(
            "STAGING_MAX_BATCH_SIZE",
            d.staging_max_batch_size as i64,
            1,
            100_000,
        ) as usize;
        let upstream_key_policy = match r.text("UPSTREAM_KEY_POLICY") {
            None => KeyPolicy::Required,
            Some(v) => KeyPolicy::parse(&v).unwrap_or_else(|| {
                r.fail(
                    "UPSTREAM_KEY_POLICY",
                    format!("{v:?} is not 'required' or 'optional'"),
                );
                KeyPolicy::Required
            }),
        };
        let staging_approval_timeout_ms = match r.text("STAGING_APPROVAL_TIMEOUT_HOURS") {
            None => d.staging_approval_timeout_ms,
            // Hours may be fractional (tests use seconds' worth).
            Some(v) => match v.parse::<f64>() {
                Ok(h) if h > 0.0 && h <= (MAX_TTL_SECONDS / 3600) as f64 => {
                    (h * 3_600_000.0) as i64
                }
                _ => {
                    r.fail(
                        "STAGING_APPROVAL_TIMEOUT_HOURS",
                        format!("{v:?} is not a positive number of hours (at most ten years)"),
                    );
                    d.staging_approval_timeout_ms
                }
            },
        };
        let staging_second_approval = match r.text("STAGING_SECOND_APPROVAL").as_deref() {
            None | Some("off") => false,
            Some("amount_changes") => true,
            Some(v) => {
                let detail = format!("{v:?} is not 'off' or 'amount_changes'");
                r.fail("STAGING_SECOND_APPROVAL", detail);
                false
            }
        };
        let upstream_functions: Vec<String> = r
            .text("UPSTREAM_FUNCTIONS")
            .map(|v| {
                v.split(',')
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let route_ttls = match r.text(ROUTE_TTLS_VAR) {
            None => Vec::new(),
            Some(spec) => {
                parse_route_ttls(&spec, routes, &upstream_functions).unwrap_or_else(|e| {
                    r.fail(ROUTE_TTLS_VAR, e);
                    Vec::new()
                })
            }
        };
        let auth_jwks_url = r.text(JWKS_URL_VAR).filter(|url| {
            let ok = jwks_url_ok(url);
            if !ok {
                let detail = format!("{url:?} is not an https:// or http:// URL");
                r.fail(JWKS_URL_VAR, detail);
            }
            ok
        });
        let mut pointer = |name: &str, default: crate::auth::pointer::Pointer| match r.text(name) {
            None => default,
            Some(v) => crate::auth::pointer::Pointer::parse(&v).unwrap_or_else(|e| {
                r.fail(name, e);
                default
            }),
        };
        let defaults = crate::auth::ClaimMapping::default();
        let auth_claims = crate::auth::ClaimMapping {
            tenant: pointer(TENANT_CLAIM_VAR, defaults.tenant),
            roles: pointer(ROLES_CLAIM_VAR, defaults.roles),
        };
        let cfg = Config {
            ttl: TtlPolicy {
                default_ms: ttl_default,
                client_error_ms: ttl_4xx,
                routes: route_ttls,
            },
            lease_ms,
            max_wait_ms,
            replay_cache_ms,
            max_body_bytes,
            max_answer_bytes,
            chunk_size,
            chunk_overlap,
            keygate_shards,
            request_log,
            test_hooks: (r.var)(TEST_HOOKS_VAR).as_deref() == Some("1"),
            upstream_base_url: r
                .text("UPSTREAM_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            upstream_functions,
            upstream_key_policy,
            upstream_timeout_ms,
            trainer_url: r.text("TRAINER_URL"),
            staging_quality_threshold,
            staging_approval_timeout_ms,
            staging_second_approval,
            staging_max_batch_size,
            destination_url: r
                .text("DESTINATION_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            auth_jwt_issuer: r.text("AUTH_JWT_ISSUER"),
            auth_jwt_audience: r.text("AUTH_JWT_AUDIENCE"),
            auth_jwks_url,
            auth_claims,
        };
        if r.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(r.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ttl::tests::ROUTES;
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(
            |n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
            &ROUTES,
        )
    }

    fn error_of(vars: &[(&str, &str)]) -> ConfigErrors {
        read(vars).expect_err("the configuration must be refused")
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = read(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            (c.ttl.default_ms, c.ttl.client_error_ms, c.lease_ms),
            (86_400_000, 300_000, 60_000)
        );
        assert_eq!((c.max_wait_ms, c.max_body_bytes), (10_000, 1_048_576));
        assert!(c.ttl.routes.is_empty());
    }

    #[test]
    fn the_request_log_is_json_unless_turned_off_and_nothing_else_is_accepted() {
        assert!(read(&[]).unwrap().request_log);
        assert!(read(&[("REQUEST_LOG", "json")]).unwrap().request_log);
        assert!(!read(&[("REQUEST_LOG", " off ")]).unwrap().request_log);
        assert_eq!(error_of(&[("REQUEST_LOG", "OFF")]).vars(), ["REQUEST_LOG"]);
        assert_eq!(
            error_of(&[("KEYGATE_SHARDS", "-1")]).vars(),
            ["KEYGATE_SHARDS"]
        );
        assert_eq!(
            error_of(&[("KEYGATE_SHARDS", "1025")]).vars(),
            ["KEYGATE_SHARDS"]
        );
        assert_eq!(read(&[("KEYGATE_SHARDS", "0")]).unwrap().keygate_shards, 0);
    }

    #[test]
    fn replay_copies_last_a_second_unless_set_within_ten() {
        assert_eq!(read(&[]).unwrap().replay_cache_ms, 1_000);
        assert_eq!(
            read(&[("REPLAY_CACHE_MS", "0")]).unwrap().replay_cache_ms,
            0
        );
        assert_eq!(
            read(&[("REPLAY_CACHE_MS", "10000")])
                .unwrap()
                .replay_cache_ms,
            10_000
        );
        for bad in ["-1", "10001", "1s", "0.5"] {
            assert_eq!(
                error_of(&[("REPLAY_CACHE_MS", bad)]).vars(),
                ["REPLAY_CACHE_MS"],
                "{bad}"
            );
        }
    }

    #[test]
    fn values_are_read_and_blank_ones_keep_their_default() {
        let c = read(&[
            ("IDEMPOTENCY_LEASE_SECONDS", " 3 "),
            ("IDEMPOTENCY_TTL_SECONDS", "600"),
            ("IDEMPOTENCY_TTL_4XX_SECONDS", "2"),
            ("MAX_BODY_BYTES", ""),
            ("IDEMGATE_TEST_HOOKS", "1"),
        ])
        .unwrap();
        assert_eq!(c.lease_ms, 3000);
        assert_eq!((c.ttl.default_ms, c.ttl.client_error_ms), (600_000, 2_000));
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert!(c.test_hooks);
    }

    #[test]
    fn a_value_that_does_not_parse_is_an_error_naming_its_variable_not_a_default() {
        for (name, value) in [
            ("MAX_BODY_BYTES", "lots"),
            ("IDEMPOTENCY_TTL_SECONDS", "0"),
            ("IDEMPOTENCY_TTL_SECONDS", "-5"),
            ("IDEMPOTENCY_TTL_SECONDS", "1.5"),
            ("IDEMPOTENCY_TTL_SECONDS", "+60"),
            ("IDEMPOTENCY_TTL_SECONDS", "99999999999999999999999"),
            ("IDEMPOTENCY_TTL_SECONDS", "315360001"),
            ("IDEMPOTENCY_TTL_4XX_SECONDS", "five minutes"),
            ("IDEMPOTENCY_TTL_4XX_SECONDS", "0"),
            ("IDEMPOTENCY_LEASE_SECONDS", "9223372036854775807"),
            ("STAGING_QUALITY_THRESHOLD", "101"),
            ("STAGING_APPROVAL_TIMEOUT_HOURS", "NaN"),
            ("UPSTREAM_KEY_POLICY", "sometimes"),
            ("STAGING_SECOND_APPROVAL", "on"),
            ("CHUNK_SIZE", "10"),
        ] {
            let e = error_of(&[(name, value)]);
            assert_eq!(e.vars(), [name], "{name}={value}");
            assert!(e.to_string().contains(value), "{e}");
        }
        // Every bad variable is reported, not only the first.
        let e = error_of(&[("MAX_BODY_BYTES", "x"), ("IDEMPOTENCY_TTL_SECONDS", "y")]);
        assert_eq!(e.0.len(), 2, "{e}");
    }

    #[test]
    fn the_second_approval_is_off_unless_asked_for_amount_changes() {
        assert!(!read(&[]).unwrap().staging_second_approval);
        assert!(
            !read(&[("STAGING_SECOND_APPROVAL", "off")])
                .unwrap()
                .staging_second_approval
        );
        assert!(
            read(&[("STAGING_SECOND_APPROVAL", "amount_changes")])
                .unwrap()
                .staging_second_approval
        );
    }

    #[test]
    fn upstream_settings_are_read() {
        let c = read(&[
            ("UPSTREAM_BASE_URL", "http://127.0.0.1:9/"),
            ("UPSTREAM_FUNCTIONS", " echo, slow ,,"),
            ("UPSTREAM_KEY_POLICY", "optional"),
            ("UPSTREAM_TIMEOUT_MS", "1500"),
            ("TRAINER_URL", "  "),
        ])
        .unwrap();
        assert_eq!(c.upstream_base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(c.upstream_functions, ["echo", "slow"]);
        assert_eq!(c.upstream_key_policy, KeyPolicy::Optional);
        assert_eq!(c.upstream_timeout_ms, 1500);
        assert_eq!(c.trainer_url, None);
    }

    #[test]
    fn jwt_issuer_and_audience_are_optional_and_read_when_set() {
        let c = read(&[]).unwrap();
        assert_eq!((c.auth_jwt_issuer, c.auth_jwt_audience), (None, None));
        let c = read(&[
            ("AUTH_JWT_ISSUER", " https://issuer.example "),
            ("AUTH_JWT_AUDIENCE", "idemgate"),
        ])
        .unwrap();
        assert_eq!(c.auth_jwt_issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(c.auth_jwt_audience.as_deref(), Some("idemgate"));
        let c = read(&[("AUTH_JWT_AUDIENCE", "  ")]).unwrap();
        assert_eq!(c.auth_jwt_audience, None);
    }

    #[test]
    fn route_ttls_are_read_and_a_bad_list_is_refused_naming_its_variable() {
        let c = read(&[
            ("UPSTREAM_FUNCTIONS", "charge"),
            (
                ROUTE_TTLS_VAR,
                "/v1/documents=604800,/functions/v1/charge=3600",
            ),
            (TTL_4XX_VAR, "60"),
        ])
        .unwrap();
        assert_eq!(c.ttl.routes.len(), 2);
        assert_eq!(c.ttl.client_error_ms, 60_000);
        let ttl = c.ttl.for_route("POST /functions/v1/{name}", Some("charge"));
        assert_eq!((ttl.default_ms, ttl.client_error_ms), (3_600_000, 60_000));
        // Without UPSTREAM_FUNCTIONS naming it, the function is unknown.
        let e = error_of(&[(ROUTE_TTLS_VAR, "/functions/v1/charge=3600")]);
        assert_eq!(e.vars(), [ROUTE_TTLS_VAR]);
        assert!(e.to_string().contains("not in UPSTREAM_FUNCTIONS"), "{e}");
        let e = error_of(&[(ROUTE_TTLS_VAR, "/v1/nope=60"), (TTL_VAR, "0")]);
        assert_eq!(e.vars(), [TTL_VAR, ROUTE_TTLS_VAR]);
        // Blank means no overrides.
        assert!(read(&[(ROUTE_TTLS_VAR, "  ")])
            .unwrap()
            .ttl
            .routes
            .is_empty());
    }

    #[test]
    fn jwks_url_and_claim_pointers_are_read_and_refused_when_they_do_not_parse() {
        let c = read(&[]).unwrap();
        assert_eq!(c.auth_jwks_url, None);
        assert_eq!(c.auth_claims, crate::auth::ClaimMapping::default());
        assert_eq!(c.auth_claims.tenant.as_str(), "/tenant");
        assert_eq!(c.auth_claims.roles.as_str(), "/roles");
        let c = read(&[
            (
                JWKS_URL_VAR,
                " https://team.cloudflareaccess.com/cdn-cgi/access/certs ",
            ),
            (TENANT_CLAIM_VAR, "/app_metadata/tenant_id"),
            (ROLES_CLAIM_VAR, "/https:~1~1example.com~1roles"),
        ])
        .unwrap();
        assert_eq!(
            c.auth_jwks_url.as_deref(),
            Some("https://team.cloudflareaccess.com/cdn-cgi/access/certs")
        );
        assert_eq!(c.auth_claims.tenant.as_str(), "/app_metadata/tenant_id");
        assert_eq!(
            c.auth_claims.roles.as_str(),
            "/https:~1~1example.com~1roles"
        );
        assert!(read(&[(JWKS_URL_VAR, "http://127.0.0.1:9999/jwks.json")]).is_ok());
        assert_eq!(
            read(&[(TENANT_CLAIM_VAR, "  ")])
                .unwrap()
                .auth_claims
                .tenant
                .as_str(),
            "/tenant"
        );
        for (var, bad) in [
            (
                JWKS_URL_VAR,
                "team.cloudflareaccess.com/cdn-cgi/access/certs",
            ),
            (JWKS_URL_VAR, "ftp://keys.example/jwks"),
            (JWKS_URL_VAR, "https://"),
            (JWKS_URL_VAR, "https://keys example/jwks"),
            (TENANT_CLAIM_VAR, "app_metadata.tenant_id"),
            (TENANT_CLAIM_VAR, "/a~2b"),
            (ROLES_CLAIM_VAR, "roles"),
            (ROLES_CLAIM_VAR, "/x/~"),
        ] {
            assert_eq!(error_of(&[(var, bad)]).vars(), [var], "{var}={bad}");
        }
    }
}
