//! Keys from a JWKS (`AUTH_JWKS_URL`): which key may verify which token, how
//! long a fetched key set is used, and when it is fetched again. Pure: the
//! Worker does the fetch and the signature check (WebCrypto, `src/js/glue.js`)
//! and asks [`KeyCache`] what to do, with the time passed in.
//!
//! - A key is usable only for the one algorithm its `kty` and `crv` allow
//!   (`RSA` → RS256, `EC`/`P-256` → ES256, `OKP`/`Ed25519` → EdDSA), and only if
//!   its `alg`, `use` and `key_ops`, when present, agree. Symmetric (`oct`)
//!   keys are never taken from a JWKS: HS256 is verified with
//!   `AUTH_JWT_SECRET` only.
//! - A key set is fresh for its answer's `Cache-Control: max-age`, clamped to
//!   [`MIN_TTL_MS`]..[`MAX_TTL_MS`] ([`DEFAULT_TTL_MS`] without one).
//! - A key set is fetched again when it is stale or a token names a `kid` it
//!   does not hold, at most once per [`REFETCH_INTERVAL_MS`].
//! - When a fetch fails, the keys held keep working, stale or not; a token
//!   whose key is not held then gets [`Lookup::Unavailable`] (503).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;

/// Shortest time a key set is used before it is fetched again.
pub const MIN_TTL_MS: f64 = 60_000.0;
/// Longest time a key set is used before it is fetched again.
pub const MAX_TTL_MS: f64 = 86_400_000.0;
/// How long a key set is used when its answer has no `max-age`.
pub const DEFAULT_TTL_MS: f64 = 600_000.0;
/// At most one fetch per isolate in this interval, whatever asks for it.
pub const REFETCH_INTERVAL_MS: f64 = 30_000.0;
/// Largest JWKS answer read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
pub const MIN_RSA_MODULUS_BYTES: usize = 256;

/// An algorithm verified with a JWKS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The algorithm a token's `alg` header names, if it is one of these.
    pub fn of(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// WebCrypto's `importKey` algorithm, as JSON.
    pub fn import_params(self) -> &'static str {
        match self {
            Alg::Rs256 => r#"{"name":"RSASSA-PKCS1-v1_5","hash":"SHA-256"}"#,
            Alg::Es256 => r#"{"name":"ECDSA","namedCurve":"P-256"}"#,
            Alg::EdDsa => r#"{"name":"Ed25519"}"#,
        }
    }

    /// WebCrypto's `verify` algorithm, as JSON.
    pub fn verify_params(self) -> &'static str {
        match self {
            Alg::Rs256 => r#"{"name":"RSASSA-PKCS1-v1_5"}"#,
            Alg::Es256 => r#"{"name":"ECDSA","hash":"SHA-256"}"#,
            Alg::EdDsa => r#"{"name":"Ed25519"}"#,
        }
    }

    /// Whether a signature has this algorithm's shape: ES256 and EdDSA are 64
    /// bytes (ES256's `r || s`, never DER); RS256 is as long as a modulus we accept.
    pub fn signature_fits(self, signature: &[u8]) -> bool {
        match self {
            Alg::Es256 | Alg::EdDsa => signature.len() == 64,
            Alg::Rs256 => signature.len() >= MIN_RSA_MODULUS_BYTES,
        }
    }
}

/// A key usable for one algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: String,
    pub alg: Alg,
    /// The public key alone as a JWK (`kty` and its parameters: no `alg`,
    /// `use` or `key_ops`, which `importKey` would check again), for `importKey`.
    pub jwk: String,
}

/// A JWKS entry as a key, or why it cannot verify anything here.
pub fn usable(entry: &Value) -> Result<Key, &'static str> {
    let field = |name: &str| entry.get(name);
    let text = |name: &str| -> Result<Option<&str>, &'static str> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err("a member is not a string"),
        }
    };
    let kid = text("kid")?.filter(|k| !k.is_empty()).ok_or("no kid")?;
    if text("use")?.is_some_and(|u| u != "sig") {
        return Err("use is not sig");
    }
    if let Some(ops) = field("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include verify");
        }
    }
    let coordinate = |name: &str, len: usize| -> Result<String, &'static str> {
        let v = text(name)?.ok_or("a key parameter is missing")?;
        match canonical(v) {
            Some(bytes) if bytes.len() == len => Ok(v.to_string()),
            _ => Err("a key parameter is not the right base64url"),
        }
    };
    let (alg, jwk) = match (text("kty")?, text("crv")?) {
        (Some("RSA"), None) => {
            let n = text("n")?.ok_or("a key parameter is missing")?;
            let e = text("e")?.ok_or("a key parameter is missing")?;
            let modulus = canonical(n).ok_or("a key parameter is not the right base64url")?;
            let exponent = canonical(e).ok_or("a key parameter is not the right base64url")?;
            // The modulus without leading zero bytes.
            let bits = modulus.iter().skip_while(|b| **b == 0).count();
            if bits < MIN_RSA_MODULUS_BYTES {
                return Err("the RSA modulus is under 2048 bits");
            }
            if exponent.is_empty() || exponent.len() > 8 {
                return Err("the RSA exponent is not a small number");
            }
            let jwk = serde_json::json!({"kty": "RSA", "n": n, "e": e});
            (Alg::Rs256, jwk)
        }
        (Some("EC"), Some("P-256")) => {
            let x = coordinate("x", 32)?;
            let y = coordinate("y", 32)?;
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
            (Alg::Es256, jwk)
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = coordinate("x", 32)?;
            let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x});
            (Alg::EdDsa, jwk)
        }
        (Some("oct"), _) => return Err("a symmetric key is never taken from a JWKS"),
        _ => return Err("the key type or curve is not RSA, EC P-256 or OKP Ed25519"),
    };
    if let Some(named) = text("alg")? {
        let agrees = named == alg.name() || (alg == Alg::EdDsa && named == "Ed25519");
        if !agrees {
            return Err("alg does not agree with the key type");
        }
    }
    Ok(Key {
        kid: kid.to_string(),
        alg,
        jwk: jwk.to_string(),
    })
}

/// Canonical unpadded base64url, decoded.
fn canonical(text: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    (URL_SAFE_NO_PAD.encode(&bytes) == text).then_some(bytes)
}

/// The usable keys of a JWKS document (`{"keys": [...]}`); entries that are not
/// usable are left out. `Err` if the document is not a JWKS.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no keys array")?;
    Ok(keys.iter().filter_map(|k| usable(k).ok()).collect())
}

/// How long a key set fetched with this `Cache-Control` is used, in ms:
/// `max-age` clamped to [`MIN_TTL_MS`]..[`MAX_TTL_MS`]; `no-store` or
/// `no-cache` the minimum; none (or none that parses) [`DEFAULT_TTL_MS`].
pub fn ttl_ms(cache_control: Option<&str>) -> f64 {
    let Some(cc) = cache_control else {
        return DEFAULT_TTL_MS;
    };
    let mut max_age = None;
    for directive in cc.split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return MIN_TTL_MS;
        }
        if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
            let value = value.map(|v| v.trim_matches('"')).unwrap_or_default();
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                // Too many digits for u64 is a very long time.
                max_age = Some(value.parse::<u64>().map_or(f64::MAX, |s| s as f64 * 1000.0));
            }
        }
    }
    max_age.map_or(DEFAULT_TTL_MS, |ms| ms.clamp(MIN_TTL_MS, MAX_TTL_MS))
}

/// What to do for a token's `kid` and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Verify with this key.
    Use(Key),
    /// Fetch the key set, record it with [`KeyCache::fetched`], then look up again.
    Fetch,
    /// The key set, fetched as recently as allowed, holds no such key: 401.
    Unknown,
    /// The key of that `kid` is for another algorithm: 401.
    WrongAlg(Alg),
    /// No key set could be fetched to find the key: 503, retry after this
    /// many seconds (when the next fetch is allowed).
    Unavailable { retry_after_secs: u32 },
}

/// One isolate's keys from its JWKS, and when it last tried to fetch them.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: HashMap<String, Vec<Key>>,
    /// When the keys held turn stale (ms since the epoch); 0 before a fetch.
    fresh_until: f64,
    /// When the last fetch ended, and whether it brought a key set.
    last_attempt: Option<(f64, bool)>,
}

impl KeyCache {
    /// Whether a fetch is allowed at `now_ms` ([`REFETCH_INTERVAL_MS`]).
    fn may_fetch(&self, now_ms: f64) -> bool {
        self.last_attempt
            .is_none_or(|(at, _)| now_ms - at >= REFETCH_INTERVAL_MS || now_ms < at)
    }

    /// What to do for a token signed with `alg` under `kid` at `now_ms`.
    pub fn lookup(&self, kid: &str, alg: Alg, now_ms: f64) -> Lookup {
        let may_fetch = self.may_fetch(now_ms);
        if let Some(keys) = self.keys.get(kid) {
            if now_ms >= self.fresh_until && may_fetch {
                return Lookup::Fetch;
            }
            return match keys.iter().find(|k| k.alg == alg) {
                Some(key) => Lookup::Use(key.clone()),
                None => Lookup::WrongAlg(keys[0].alg),
            };
        }
        if may_fetch {
            return Lookup::Fetch;
        }
        match self.last_attempt {
            Some((_, true)) => Lookup::Unknown,
            Some((at, false)) => {
                let wait = (at + REFETCH_INTERVAL_MS - now_ms) / 1000.0;
                Lookup::Unavailable {
                    retry_after_secs: wait.ceil().clamp(1.0, 60.0) as u32,
                }
            }
            // Unreachable: no attempt means a fetch is allowed.
            None => Lookup::Fetch,
        }
    }

    /// Records a fetch that ended at `now_ms`: its `Cache-Control` and body,
    /// or why it failed. A key set replaces the keys held; a failure (or an
    /// answer that is not a JWKS) keeps them. `Err`: why nothing was taken.
    pub fn fetched(
        &mut self,
        now_ms: f64,
        answer: Result<(Option<&str>, &[u8]), String>,
    ) -> Result<usize, String> {
        let keys = answer.and_then(|(cache_control, body)| {
            parse_jwks(body).map(|keys| (keys, ttl_ms(cache_control)))
        });
        match keys {
            Ok((keys, ttl)) => {
                let count = keys.len();
                self.keys.clear();
                for key in keys {
                    self.keys.entry(key.kid.clone()).or_default().push(key);
                }
                self.fresh_until = now_ms + ttl;
                self.last_attempt = Some((now_ms, true));
                Ok(count)
            }
            Err(why) => {
                self.last_attempt = Some((now_ms, false));
                Err(why)
            }
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa(kid: &str) -> Value {
        json!({"kty":"RSA","kid":kid,"n":b64(&[0xc5; 256]),"e":"AQAB"})
    }

    fn ec(kid: &str) -> Value {
        json!({"kty":"EC","crv":"P-256","kid":kid,"x":b64(&[1; 32]),"y":b64(&[2; 32])})
    }

    fn okp(kid: &str) -> Value {
        json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":b64(&[3; 32])})
    }

    fn with(mut entry: Value, member: &str, value: Value) -> Value {
        entry[member] = value;
        entry
    }

    #[test]
    fn each_key_type_serves_one_algorithm() {
        assert_eq!(usable(&rsa("r")).unwrap().alg, Alg::Rs256);
        assert_eq!(usable(&ec("e")).unwrap().alg, Alg::Es256);
        assert_eq!(usable(&okp("o")).unwrap().alg, Alg::EdDsa);
        // The key handed to importKey is the public key alone.
        let key = usable(&with(
            with(rsa("r"), "alg", json!("RS256")),
            "use",
            json!("sig"),
        ))
        .unwrap();
        let jwk: Value = serde_json::from_str(&key.jwk).unwrap();
        assert_eq!(jwk.as_object().unwrap().len(), 3, "{jwk}");
        assert_eq!(jwk["kty"], "RSA");
    }

    #[test]
    fn alg_use_and_key_ops_must_agree_with_the_key() {
        for (entry, why) in [
            (with(rsa("r"), "alg", json!("RS384")), "alg"),
            (with(rsa("r"), "alg", json!("PS256")), "alg"),
            (with(rsa("r"), "alg", json!("HS256")), "alg"),
            (with(ec("e"), "alg", json!("RS256")), "alg"),
            (with(ec("e"), "alg", json!("ES384")), "alg"),
            (with(okp("o"), "alg", json!("ES256")), "alg"),
            (with(rsa("r"), "use", json!("enc")), "use"),
            (with(rsa("r"), "key_ops", json!(["sign"])), "key_ops"),
            (with(rsa("r"), "key_ops", json!("verify")), "key_ops"),
        ] {
            assert!(usable(&entry).unwrap_err().contains(why), "{entry}");
        }
        assert!(usable(&with(ec("e"), "alg", json!("ES256"))).is_ok());
        assert!(usable(&with(okp("o"), "alg", json!("EdDSA"))).is_ok());
        assert!(usable(&with(okp("o"), "alg", json!("Ed25519"))).is_ok());
        assert!(usable(&with(rsa("r"), "key_ops", json!(["verify", "sign"]))).is_ok());
    }

    #[test]
    fn curves_types_and_parameters_are_checked() {
        for entry in [
            with(ec("e"), "crv", json!("P-384")),
            with(ec("e"), "crv", json!("secp256k1")),
            with(okp("o"), "crv", json!("X25519")),
            with(rsa("r"), "crv", json!("P-256")),
            json!({"kty":"oct","kid":"h","k":b64(b"secret")}),
            with(ec("e"), "x", json!(b64(&[1; 31]))),
            with(ec("e"), "y", json!(format!("{}=", b64(&[2; 32])))),
            with(ec("e"), "x", json!(1)),
            with(rsa("r"), "n", json!(b64(&[0xc5; 255]))),
            // Leading zeros do not count towards the modulus.
            with(
                rsa("r"),
                "n",
                json!(b64(&[&[0u8; 8][..], &[0xc5; 250][..]].concat())),
            ),
            with(rsa("r"), "e", json!("")),
            with(rsa("r"), "kid", json!("")),
            json!({"kty":"RSA","n":b64(&[0xc5; 256]),"e":"AQAB"}),
        ] {
            assert!(usable(&entry).is_err(), "{entry}");
        }
        assert!(usable(&json!({"kty":"oct","kid":"h","k":"c2VjcmV0"}))
            .unwrap_err()
            .contains("symmetric"));
    }

    #[test]
    fn a_jwks_keeps_its_usable_keys_and_must_be_a_jwks() {
        let doc = json!({"keys":[rsa("a"), with(rsa("b"), "use", json!("enc")), ec("c"), {"kty":"oct","kid":"d","k":"AA"}]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["a", "c"]);
        for bad in [&b"not json"[..], b"{}", b"{\"keys\":{}}", b"[]"] {
            assert!(parse_jwks(bad).is_err());
        }
        let huge = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(MAX_JWKS_BYTES));
        assert!(parse_jwks(huge.as_bytes()).is_err());
    }

    #[test]
    fn cache_control_max_age_is_clamped() {
        let secs = |cc: Option<&str>| ttl_ms(cc) / 1000.0;
        assert_eq!(secs(None), 600.0);
        assert_eq!(secs(Some("")), 600.0);
        assert_eq!(secs(Some("public, max-age=3600")), 3600.0);
        assert_eq!(secs(Some("MAX-AGE=120, must-revalidate")), 120.0);
        assert_eq!(secs(Some("max-age=\"300\"")), 300.0);
        assert_eq!(secs(Some("max-age=5")), 60.0);
        assert_eq!(secs(Some("max-age=0")), 60.0);
        assert_eq!(secs(Some("max-age=999999999")), 86_400.0);
        assert_eq!(secs(Some("max-age=99999999999999999999999")), 86_400.0);
        assert_eq!(secs(Some("no-store")), 60.0);
        assert_eq!(secs(Some("max-age=3600, no-cache")), 60.0);
        assert_eq!(secs(Some("max-age=-5")), 600.0);
        assert_eq!(secs(Some("max-age=1h")), 600.0);
        assert_eq!(secs(Some("s-maxage=30")), 600.0);
        assert_eq!(secs(Some("max-age=100, max-age=7200")), 100.0);
    }

    const T: f64 = 1_700_000_000_000.0;

    fn jwks(entries: &[Value]) -> String {
        json!({ "keys": entries }).to_string()
    }

    fn ok<'a>(cc: Option<&'a str>, body: &'a str) -> Result<(Option<&'a str>, &'a [u8]), String> {
        Ok((cc, body.as_bytes()))
    }

    #[test]
    fn a_cold_cache_fetches_then_uses_the_key() {
        let mut cache = KeyCache::default();
        assert_eq!(cache.lookup("a", Alg::Rs256, T), Lookup::Fetch);
        let body = jwks(&[rsa("a"), ec("b")]);
        assert_eq!(cache.fetched(T, ok(None, &body)), Ok(2));
        assert!(matches!(cache.lookup("a", Alg::Rs256, T + 1.0), Lookup::Use(k) if k.kid == "a"));
        assert!(matches!(cache.lookup("b", Alg::Es256, T + 1.0), Lookup::Use(k) if k.kid == "b"));
        // The right kid with another algorithm: never that key.
        assert_eq!(
            cache.lookup("a", Alg::Es256, T + 1.0),
            Lookup::WrongAlg(Alg::Rs256)
        );
        assert_eq!(
            cache.lookup("b", Alg::Rs256, T + 1.0),
            Lookup::WrongAlg(Alg::Es256)
        );
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let mut cache = KeyCache::default();
        let body = jwks(&[rsa("a")]);
        cache.fetched(T, ok(None, &body)).unwrap();
        // Within the interval: the fetched set is taken at its word.
        assert_eq!(
            cache.lookup("new", Alg::Rs256, T + 1_000.0),
            Lookup::Unknown
        );
        assert_eq!(
            cache.lookup("new", Alg::Rs256, T + REFETCH_INTERVAL_MS - 1.0),
            Lookup::Unknown
        );
        // After it: fetched again, and a rotated-in key is found.
        let later = T + REFETCH_INTERVAL_MS;
        assert_eq!(cache.lookup("new", Alg::Rs256, later), Lookup::Fetch);
        let rotated = jwks(&[rsa("a"), rsa("new")]);
        cache.fetched(later, ok(None, &rotated)).unwrap();
        assert!(matches!(
            cache.lookup("new", Alg::Rs256, later),
            Lookup::Use(_)
        ));
        // A key gone from the JWKS is gone here too.
        let after = later + REFETCH_INTERVAL_MS;
        cache
            .fetched(after, ok(None, &jwks(&[rsa("new")])))
            .unwrap();
        assert_eq!(cache.lookup("a", Alg::Rs256, after), Lookup::Unknown);
    }

    #[test]
    fn a_stale_set_is_fetched_again_and_kept_when_the_fetch_fails() {
        let mut cache = KeyCache::default();
        let body = jwks(&[ec("a")]);
        cache.fetched(T, ok(Some("max-age=120"), &body)).unwrap();
        assert!(matches!(
            cache.lookup("a", Alg::Es256, T + 119_000.0),
            Lookup::Use(_)
        ));
        assert_eq!(cache.lookup("a", Alg::Es256, T + 120_000.0), Lookup::Fetch);
        let failed = T + 120_000.0;
        assert!(cache.fetched(failed, Err("down".into())).is_err());
        // The stale key keeps working, and is not fetched again before the interval.
        assert!(matches!(
            cache.lookup("a", Alg::Es256, failed + 1.0),
            Lookup::Use(_)
        ));
        assert_eq!(
            cache.lookup("a", Alg::Es256, failed + REFETCH_INTERVAL_MS),
            Lookup::Fetch
        );
        // An answer that is not a JWKS is a failure too: the keys stay.
        let again = failed + REFETCH_INTERVAL_MS;
        assert!(cache.fetched(again, ok(None, "<html>")).is_err());
        assert!(matches!(
            cache.lookup("a", Alg::Es256, again + 1.0),
            Lookup::Use(_)
        ));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_unknown_key_while_the_jwks_is_down_is_unavailable_until_the_next_fetch() {
        let mut cache = KeyCache::default();
        assert!(cache.fetched(T, Err("refused".into())).is_err());
        assert_eq!(
            cache.lookup("a", Alg::Rs256, T + 1_000.0),
            Lookup::Unavailable {
                retry_after_secs: 29
            }
        );
        assert_eq!(
            cache.lookup("a", Alg::Rs256, T + REFETCH_INTERVAL_MS - 10.0),
            Lookup::Unavailable {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            cache.lookup("a", Alg::Rs256, T + REFETCH_INTERVAL_MS),
            Lookup::Fetch
        );
        // With keys held and the JWKS down: held keys work, others are unavailable.
        let t = T + REFETCH_INTERVAL_MS;
        cache.fetched(t, ok(None, &jwks(&[rsa("a")]))).unwrap();
        let t2 = t + REFETCH_INTERVAL_MS;
        assert_eq!(cache.lookup("b", Alg::Rs256, t2), Lookup::Fetch);
        cache.fetched(t2, Err("down".into())).unwrap_err();
        assert!(matches!(
            cache.lookup("a", Alg::Rs256, t2 + 5.0),
            Lookup::Use(_)
        ));
        assert!(matches!(
            cache.lookup("b", Alg::Rs256, t2 + 5.0),
            Lookup::Unavailable { .. }
        ));
    }

    #[test]
    fn signatures_must_have_their_algorithm_s_shape() {
        assert!(Alg::Es256.signature_fits(&[0; 64]));
        assert!(!Alg::Es256.signature_fits(&[0; 70])); // a DER signature
        assert!(Alg::EdDsa.signature_fits(&[0; 64]));
        assert!(!Alg::EdDsa.signature_fits(&[0; 63]));
        assert!(Alg::Rs256.signature_fits(&[0; 256]));
        assert!(!Alg::Rs256.signature_fits(&[0; 128]));
        for name in ["RS256", "ES256", "EdDSA"] {
            assert_eq!(Alg::of(name).unwrap().name(), name);
        }
        for name in ["HS256", "none", "rs256", "PS256", "ES384", "ES256K", ""] {
            assert_eq!(Alg::of(name), None, "{name}");
        }
    }
}
