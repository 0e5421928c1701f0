//! Bearer tokens: HS256 JWTs signed with `AUTH_JWT_SECRET`.
//!
//! Only HS256 is accepted: the algorithm comes from our configuration, never from
//! the token, so `alg: none` or an RS/HS confusion cannot pass. The MAC is checked
//! by `hmac`'s constant-time comparison.
//!
//! A token has exactly one accepted spelling: each of the three segments must be
//! canonical unpadded base64url (no `=`, no stray bits in the last character), so
//! a valid token with anything appended or re-encoded is rejected rather than
//! accepted as a second "same" token. Tokens above [`MAX_TOKEN_BYTES`] are
//! rejected before any decoding. When `AUTH_JWT_ISSUER` / `AUTH_JWT_AUDIENCE` are
//! set ([`ClaimChecks`]), `iss` must equal the issuer and `aud` (a string or an
//! array of strings, RFC 7519 §4.1.3) must contain the audience; unset, those
//! claims are not looked at.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::fmt;

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    /// The idempotency scope and data owner; the `tenant` claim, or `sub`.
    pub tenant: String,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Largest accepted token (the part after `Bearer `), in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Optional claim checks from the configuration (`AUTH_JWT_ISSUER`,
/// `AUTH_JWT_AUDIENCE`); `None` means the claim is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimChecks {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    NotBearer,
    Malformed(&'static str),
    UnsupportedAlg(String),
    BadSignature,
    Expired,
    NotYetValid,
    TooLarge,
    WrongIssuer,
    WrongAudience,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => write!(f, "the Authorization header is missing"),
            AuthError::NotBearer => write!(f, "the Authorization header must be 'Bearer <token>'"),
            AuthError::Malformed(why) => write!(f, "the token is malformed: {why}"),
            AuthError::UnsupportedAlg(alg) => {
                write!(
                    f,
                    "the token's algorithm {alg:?} is not accepted; only HS256 is"
                )
            }
            AuthError::BadSignature => write!(f, "the token's signature does not verify"),
            AuthError::Expired => write!(f, "the token has expired"),
            AuthError::NotYetValid => write!(f, "the token is not valid yet (nbf)"),
            AuthError::TooLarge => {
                write!(f, "the token is larger than {MAX_TOKEN_BYTES} bytes")
            }
            AuthError::WrongIssuer => write!(f, "the token's issuer (iss) is not accepted"),
            AuthError::WrongAudience => {
                write!(
                    f,
                    "the token's audience (aud) does not include this service"
                )
            }
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    /// Read as any JSON so that, unchecked, they are ignored as before.
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

impl Claims {
    fn check(&self, checks: &ClaimChecks) -> Result<(), AuthError> {
        if let Some(issuer) = &checks.issuer {
            if self.iss.as_ref().and_then(|v| v.as_str()) != Some(issuer.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        if let Some(audience) = &checks.audience {
            let listed = match &self.aud {
                Some(serde_json::Value::String(a)) => a == audience,
                Some(serde_json::Value::Array(items)) => {
                    items.iter().any(|a| a.as_str() == Some(audience.as_str()))
                }
                _ => false,
            };
            if !listed {
                return Err(AuthError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// Verifies an `Authorization` header value at `now_secs` (seconds since the epoch),
/// without issuer or audience checks.
pub fn authenticate(
    header: Option<&str>,
    secret: &[u8],
    now_secs: f64,
) -> Result<Caller, AuthError> {
    authenticate_with(header, secret, now_secs, &ClaimChecks::default())
}

/// [`authenticate`], plus the configured claim checks.
pub fn authenticate_with(
    header: Option<&str>,
    secret: &[u8],
    now_secs: f64,
    checks: &ClaimChecks,
) -> Result<Caller, AuthError> {
    verify_hs256_with(bearer(header)?, secret, now_secs, checks)
}

/// The token of a `Bearer` header value.
fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    Ok(token.trim())
}

/// Decodes one segment, accepting only its canonical spelling: unpadded
/// base64url (`URL_SAFE_NO_PAD` refuses `=` and stray trailing bits), and, to be
/// sure whatever the engine's settings, only text that re-encodes to itself.
fn decode_segment(seg: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(seg)
        .map_err(|_| AuthError::Malformed(what))?;
    if URL_SAFE_NO_PAD.encode(&bytes) != seg {
        return Err(AuthError::Malformed(what));
    }
    Ok(bytes)
}

/// Verifies a compact JWS with HS256 and reads the claims.
pub fn verify_hs256(token: &str, secret: &[u8], now_secs: f64) -> Result<Caller, AuthError> {
    verify_hs256_with(token, secret, now_secs, &ClaimChecks::default())
}

/// [`verify_hs256`], plus the configured claim checks.
pub fn verify_hs256_with(
    token: &str,
    secret: &[u8],
    now_secs: f64,
    checks: &ClaimChecks,
) -> Result<Caller, AuthError> {
    verify(token, secret, now_secs, checks).map(|v| v.caller)
}

/// A token whose signature and claims passed: who it names and when it is valid.
#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    exp: f64,
    nbf: Option<f64>,
}

impl Verified {
    /// Whether the token is valid at `now_secs` (`exp` and `nbf`).
    fn in_time(&self, now_secs: f64) -> Result<(), AuthError> {
        if now_secs >= self.exp {
            return Err(AuthError::Expired);
        }
        if self.nbf.is_some_and(|nbf| now_secs < nbf) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }
}

fn verify(
    token: &str,
    secret: &[u8],
    now_secs: f64,
    checks: &ClaimChecks,
) -> Result<Verified, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(&decode_segment(h, "header is not base64url")?)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "HS256" {
        return Err(AuthError::UnsupportedAlg(header.alg));
    }
    let payload = decode_segment(p, "payload is not base64url")?;
    let signature = decode_segment(s, "signature is not base64url")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::BadSignature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|_| AuthError::Malformed("claims need sub (string) and exp (number)"))?;
    if claims.sub.is_empty() {
        return Err(AuthError::Malformed("sub is empty"));
    }
    let tenant = claims
        .tenant
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| claims.sub.clone());
    let verified = Verified {
        caller: Caller {
            sub: claims.sub.clone(),
            tenant,
            roles: claims.roles.clone(),
        },
        exp: claims.exp,
        nbf: claims.nbf,
    };
    verified.in_time(now_secs)?;
    claims.check(checks)?;
    Ok(verified)
}

/// How many verified tokens an isolate remembers; when full it forgets them all
/// (a bound on memory, not a policy: the next use of each verifies it again).
/// With tokens of at most [`MAX_TOKEN_BYTES`], at most 8 MiB.
pub const REMEMBERED_TOKENS: usize = 1024;

/// Tokens this isolate has verified, so that a caller's next request skips the
/// base64, the MAC and the claims parse (a V8 profile of `wrangler dev` put the
/// full check at 9 % of a replay's CPU). A token is remembered only once it
/// passed in full, under the secret and claim checks it passed with: another
/// secret or other checks forget them all. `exp` and `nbf` are checked again on
/// every use; a token that failed is never remembered, so a bad one costs the
/// full check each time, as before.
/// What [`VerifiedTokens::resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Caller(Caller),
    Refused(AuthError),
    /// Not remembered, and verifying was not allowed.
    Unverified,
}

#[derive(Default)]
pub struct VerifiedTokens {
    secret: Vec<u8>,
    checks: ClaimChecks,
    tokens: std::collections::HashMap<String, Verified>,
}

impl VerifiedTokens {
    /// [`authenticate_with`], remembering what passes: [`Self::resolve`]
    /// allowed to verify.
    #[cfg(test)]
    pub fn authenticate(
        &mut self,
        header: Option<&str>,
        secret: &[u8],
        now_secs: f64,
        checks: &ClaimChecks,
    ) -> Result<Caller, AuthError> {
        match self.resolve(header, secret, now_secs, checks, true) {
            Resolved::Caller(caller) => Ok(caller),
            Resolved::Refused(e) => Err(e),
            // Never answered when verifying is allowed.
            Resolved::Unverified => Err(AuthError::Missing),
        }
    }

    /// The caller of a token already remembered under this secret and these
    /// checks and valid at `now_secs`; `None` for anything else — a token never
    /// seen, expired, before its `nbf`, another secret — which [`authenticate`]
    /// then answers: [`Self::resolve`] not allowed to verify.
    ///
    /// [`authenticate`]: VerifiedTokens::authenticate
    #[cfg(test)]
    pub fn recall(
        &mut self,
        header: Option<&str>,
        secret: &[u8],
        now_secs: f64,
        checks: &ClaimChecks,
    ) -> Option<Caller> {
        match self.resolve(header, secret, now_secs, checks, false) {
            Resolved::Caller(caller) => Some(caller),
            Resolved::Refused(_) | Resolved::Unverified => None,
        }
    }

    /// The one resolution of a request's caller. A token remembered under this
    /// secret and these checks answers from memory, `exp` and `nbf` checked
    /// again at `now_secs`. Anything else is verified in full when `may_verify`
    /// allows it (and remembered if it passes); when it does not, the answer is
    /// [`Resolved::Unverified`] and nothing is parsed: only a lookup and string
    /// slicing, so nothing a client sends reaches a parser (the Worker's quick
    /// passthrough runs outside its panic guard: `frontend_worker::quick_pass`).
    pub fn resolve(
        &mut self,
        header: Option<&str>,
        secret: &[u8],
        now_secs: f64,
        checks: &ClaimChecks,
        may_verify: bool,
    ) -> Resolved {
        let same_rules = self.secret == secret && &self.checks == checks;
        if !may_verify {
            let known = bearer(header)
                .ok()
                .filter(|_| same_rules)
                .and_then(|token| self.tokens.get(token))
                .filter(|known| known.in_time(now_secs).is_ok());
            return match known {
                Some(known) => Resolved::Caller(known.caller.clone()),
                None => Resolved::Unverified,
            };
        }
        let token = match bearer(header) {
            Ok(token) => token,
            Err(e) => return Resolved::Refused(e),
        };
        if !same_rules {
            self.tokens.clear();
            self.secret = secret.to_vec();
            self.checks = checks.clone();
        }
        if let Some(known) = self.tokens.get(token) {
            return match known.in_time(now_secs) {
                Ok(()) => Resolved::Caller(known.caller.clone()),
                Err(e) => Resolved::Refused(e),
            };
        }
        let verified = match verify(token, secret, now_secs, checks) {
            Ok(v) => v,
            Err(e) => return Resolved::Refused(e),
        };
        if self.tokens.len() >= REMEMBERED_TOKENS {
            self.tokens.clear();
        }
        let caller = verified.caller.clone();
        self.tokens.insert(token.to_string(), verified);
        Resolved::Caller(caller)
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Signs claims as an HS256 JWT, for the tests (`./x token` signs with `tests/e2e/jwt.py`).
#[cfg(test)]
pub fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{h}.{p}").as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";
    const NOW: f64 = 1_700_000_000.0;

    fn token(claims: serde_json::Value) -> String {
        format!("Bearer {}", sign_hs256(&claims, SECRET))
    }

    #[test]
    fn valid_token_yields_caller_with_tenant_defaulting_to_sub() {
        let c = authenticate(
            Some(&token(json!({"sub":"u1","exp":NOW+60.0}))),
            SECRET,
            NOW,
        )
        .unwrap();
        assert_eq!(
            c,
            Caller {
                sub: "u1".into(),
                tenant: "u1".into(),
                roles: vec![]
            }
        );
        let c = authenticate(
            Some(&token(
                json!({"sub":"u1","tenant":"acme","roles":["admin"],"exp":NOW+60.0}),
            )),
            SECRET,
            NOW,
        )
        .unwrap();
        assert_eq!(c.tenant, "acme");
        assert!(c.has_role("admin"));
    }

    #[test]
    fn expired_token_is_rejected() {
        let t = token(json!({"sub":"u1","exp":NOW}));
        assert_eq!(authenticate(Some(&t), SECRET, NOW), Err(AuthError::Expired));
    }

    #[test]
    fn token_without_exp_is_rejected() {
        let t = token(json!({"sub":"u1"}));
        assert!(matches!(
            authenticate(Some(&t), SECRET, NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let t = token(json!({"sub":"u1","exp":NOW+60.0}));
        assert_eq!(
            authenticate(Some(&t), b"other", NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let t = sign_hs256(&json!({"sub":"u1","exp":NOW+60.0}), SECRET);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub":"admin","exp":NOW+60.0}).to_string());
        let t2 = format!("Bearer {}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            authenticate(Some(&t2), SECRET, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_other_algs_are_rejected() {
        let p = URL_SAFE_NO_PAD.encode(json!({"sub":"u1","exp":NOW+60.0}).to_string());
        for alg in ["none", "HS512", "RS256", "hs256"] {
            let h = URL_SAFE_NO_PAD.encode(json!({"alg":alg}).to_string());
            let t = format!("Bearer {h}.{p}.");
            assert_eq!(
                authenticate(Some(&t), SECRET, NOW),
                Err(AuthError::UnsupportedAlg(alg.into())),
                "{alg}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(authenticate(None, SECRET, NOW), Err(AuthError::Missing));
        assert_eq!(
            authenticate(Some("Basic abc"), SECRET, NOW),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            authenticate(Some("Bearer"), SECRET, NOW),
            Err(AuthError::NotBearer)
        );
        assert!(matches!(
            authenticate(Some("Bearer a.b"), SECRET, NOW),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            authenticate(Some("Bearer a.b.c.d"), SECRET, NOW),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            authenticate(Some("Bearer !!.??.**"), SECRET, NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    /// A valid token's three segments.
    fn segments(claims: serde_json::Value) -> (String, String, String) {
        let t = sign_hs256(&claims, SECRET);
        let mut it = t.split('.').map(str::to_owned);
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    }

    #[test]
    fn padded_or_non_canonical_base64url_is_rejected() {
        let (h, p, s) = segments(json!({"sub":"u1","exp":NOW+60.0}));
        assert!(authenticate(Some(&format!("Bearer {h}.{p}.{s}")), SECRET, NOW).is_ok());
        // 32 signature bytes are 43 characters: the last one carries 2 spare bits.
        assert_eq!(s.len(), 43);
        for forged in [
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}=="),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}==.{s}"),
        ] {
            assert!(
                matches!(
                    authenticate(Some(&format!("Bearer {forged}")), SECRET, NOW),
                    Err(AuthError::Malformed(_))
                ),
                "{forged}"
            );
        }
        // Same decoded bytes, other spare bits: not the canonical encoding.
        let last = s.as_bytes()[42];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|c| *c == last).unwrap();
        for spare in 1..4 {
            let other = alphabet[(index & !3) | ((index + spare) & 3)] as char;
            let forged = format!("Bearer {h}.{p}.{}{other}", &s[..42]);
            assert!(
                authenticate(Some(&forged), SECRET, NOW).is_err(),
                "{forged}"
            );
        }
    }

    #[test]
    fn oversized_token_is_rejected_before_decoding() {
        let big = "x".repeat(MAX_TOKEN_BYTES);
        let t = token(json!({"sub":"u1","exp":NOW+60.0,"pad":big}));
        assert_eq!(
            authenticate(Some(&t), SECRET, NOW),
            Err(AuthError::TooLarge)
        );
        let fits = token(json!({"sub":"u1","exp":NOW+60.0,"pad":"x".repeat(5000)}));
        assert!(fits.len() - "Bearer ".len() <= MAX_TOKEN_BYTES);
        assert!(authenticate(Some(&fits), SECRET, NOW).is_ok());
        let junk = format!("Bearer {}", "a.".repeat(1_000_000));
        assert_eq!(
            authenticate(Some(&junk), SECRET, NOW),
            Err(AuthError::TooLarge)
        );
    }

    fn checks(iss: Option<&str>, aud: Option<&str>) -> ClaimChecks {
        ClaimChecks {
            issuer: iss.map(str::to_owned),
            audience: aud.map(str::to_owned),
        }
    }

    fn with(claims: serde_json::Value, c: &ClaimChecks) -> Result<Caller, AuthError> {
        authenticate_with(Some(&token(claims)), SECRET, NOW, c)
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let c = checks(Some("https://issuer.example"), None);
        let exp = NOW + 60.0;
        assert!(with(
            json!({"sub":"u","exp":exp,"iss":"https://issuer.example"}),
            &c
        )
        .is_ok());
        for iss in [
            json!("https://other.example"),
            json!(null),
            json!(1),
            json!(["https://issuer.example"]),
        ] {
            assert_eq!(
                with(json!({"sub":"u","exp":exp,"iss":iss}), &c),
                Err(AuthError::WrongIssuer),
                "{iss}"
            );
        }
        assert_eq!(
            with(json!({"sub":"u","exp":exp}), &c),
            Err(AuthError::WrongIssuer)
        );
        // Not configured: any iss (or none) is fine, as before.
        let none = ClaimChecks::default();
        assert!(with(json!({"sub":"u","exp":exp,"iss":"anything"}), &none).is_ok());
        assert!(with(json!({"sub":"u","exp":exp,"iss":7}), &none).is_ok());
    }

    #[test]
    fn audience_may_be_a_string_or_an_array_and_is_checked_when_configured() {
        let c = checks(None, Some("idemgate"));
        let exp = NOW + 60.0;
        for aud in [
            json!("idemgate"),
            json!(["other", "idemgate"]),
            json!(["idemgate"]),
        ] {
            assert!(
                with(json!({"sub":"u","exp":exp,"aud":aud}), &c).is_ok(),
                "{aud}"
            );
        }
        for aud in [
            json!("other"),
            json!([]),
            json!(["other"]),
            json!("idemgate "),
            json!(null),
            json!({"aud":"idemgate"}),
            json!([["idemgate"]]),
        ] {
            assert_eq!(
                with(json!({"sub":"u","exp":exp,"aud":aud}), &c),
                Err(AuthError::WrongAudience),
                "{aud}"
            );
        }
        assert_eq!(
            with(json!({"sub":"u","exp":exp}), &c),
            Err(AuthError::WrongAudience)
        );
        let both = checks(Some("i"), Some("a"));
        assert!(with(json!({"sub":"u","exp":exp,"iss":"i","aud":"a"}), &both).is_ok());
        assert_eq!(
            with(json!({"sub":"u","exp":exp,"iss":"i","aud":"b"}), &both),
            Err(AuthError::WrongAudience)
        );
        assert!(with(
            json!({"sub":"u","exp":exp,"aud":5}),
            &ClaimChecks::default()
        )
        .is_ok());
    }

    #[test]
    fn not_yet_valid_token_is_rejected() {
        let t = token(json!({"sub":"u1","exp":NOW+60.0,"nbf":NOW+30.0}));
        assert_eq!(
            authenticate(Some(&t), SECRET, NOW),
            Err(AuthError::NotYetValid)
        );
    }

    mod remembered {
        use super::super::*;
        use super::{token, NOW, SECRET};
        use serde_json::json;

        fn remember(
            tokens: &mut VerifiedTokens,
            header: &str,
            at: f64,
        ) -> Result<Caller, AuthError> {
            tokens.authenticate(Some(header), SECRET, at, &ClaimChecks::default())
        }

        #[test]
        fn a_remembered_token_still_expires_and_is_not_valid_before_nbf() {
            let mut tokens = VerifiedTokens::default();
            let t = token(json!({"sub":"u1","exp":NOW+60.0,"nbf":NOW-10.0}));
            assert_eq!(remember(&mut tokens, &t, NOW).unwrap().sub, "u1");
            assert_eq!(tokens.len(), 1);
            assert_eq!(remember(&mut tokens, &t, NOW + 59.0).unwrap().sub, "u1");
            assert_eq!(
                remember(&mut tokens, &t, NOW + 60.0),
                Err(AuthError::Expired)
            );
            assert_eq!(
                remember(&mut tokens, &t, NOW - 11.0),
                Err(AuthError::NotYetValid)
            );
        }

        #[test]
        fn another_secret_or_other_claim_checks_forget_what_was_verified() {
            let mut tokens = VerifiedTokens::default();
            let t = token(json!({"sub":"u1","exp":NOW+60.0}));
            assert!(remember(&mut tokens, &t, NOW).is_ok());
            assert_eq!(
                tokens.authenticate(Some(&t), b"rotated", NOW, &ClaimChecks::default()),
                Err(AuthError::BadSignature)
            );
            assert!(tokens.is_empty());
            assert!(remember(&mut tokens, &t, NOW).is_ok());
            let issuer = ClaimChecks {
                issuer: Some("https://issuer.example".into()),
                audience: None,
            };
            assert_eq!(
                tokens.authenticate(Some(&t), SECRET, NOW, &issuer),
                Err(AuthError::WrongIssuer)
            );
        }

        #[test]
        fn a_token_that_failed_is_never_remembered() {
            let mut tokens = VerifiedTokens::default();
            let good = token(json!({"sub":"u1","exp":NOW+60.0}));
            let forged = format!("{}x", &good[..good.len() - 1]);
            for _ in 0..2 {
                assert!(remember(&mut tokens, &forged, NOW).is_err());
            }
            let expired = token(json!({"sub":"u1","exp":NOW}));
            assert_eq!(
                remember(&mut tokens, &expired, NOW),
                Err(AuthError::Expired)
            );
            assert_eq!(
                remember(&mut tokens, "Basic abc", NOW),
                Err(AuthError::NotBearer)
            );
            assert_eq!(
                tokens.authenticate(None, SECRET, NOW, &ClaimChecks::default()),
                Err(AuthError::Missing)
            );
            assert!(tokens.is_empty());
        }

        #[test]
        fn recall_answers_only_for_a_remembered_token_in_time_under_its_secret_and_checks() {
            let mut tokens = VerifiedTokens::default();
            let none = ClaimChecks::default();
            let t = token(json!({"sub":"u1","exp":NOW+60.0,"nbf":NOW-10.0}));
            // Never seen: nothing to recall, and recalling remembers nothing.
            assert_eq!(tokens.recall(Some(&t), SECRET, NOW, &none), None);
            assert!(tokens.is_empty());
            assert!(remember(&mut tokens, &t, NOW).is_ok());
            let caller = tokens.recall(Some(&t), SECRET, NOW + 59.0, &none);
            assert_eq!(caller, remember(&mut tokens, &t, NOW + 59.0).ok());
            // The scheme's case and surrounding blanks, as the full check reads them.
            let spaced = format!("  bearer   {}  ", t.trim_start_matches("Bearer "));
            assert_eq!(
                tokens
                    .recall(Some(&spaced), SECRET, NOW, &none)
                    .map(|c| c.sub),
                Some("u1".to_string())
            );
            for (at, secret) in [
                (NOW + 60.0, SECRET),
                (NOW - 11.0, SECRET),
                (NOW, b"rotated".as_slice()),
            ] {
                assert_eq!(tokens.recall(Some(&t), secret, at, &none), None);
            }
            let issuer = ClaimChecks {
                issuer: Some("https://issuer.example".into()),
                audience: None,
            };
            assert_eq!(tokens.recall(Some(&t), SECRET, NOW, &issuer), None);
            let other = token(json!({"sub":"u2","exp":NOW+60.0}));
            for header in [Some(other.as_str()), Some("Basic abc"), Some(""), None] {
                assert_eq!(tokens.recall(header, SECRET, NOW, &none), None);
            }
            // A forged copy of the remembered token is not the remembered token.
            let forged = format!("{}x", &t[..t.len() - 1]);
            assert_eq!(tokens.recall(Some(&forged), SECRET, NOW, &none), None);
        }

        #[test]
        fn memory_is_bounded_however_many_tokens_come() {
            let mut tokens = VerifiedTokens::default();
            for i in 0..REMEMBERED_TOKENS + 10 {
                let t = token(json!({"sub":format!("u{i}"),"exp":NOW+60.0}));
                assert_eq!(remember(&mut tokens, &t, NOW).unwrap().sub, format!("u{i}"));
                assert!(tokens.len() <= REMEMBERED_TOKENS);
            }
            assert_eq!(tokens.len(), 10);
        }
    }

    mod properties {
        use super::super::*;
        use super::{NOW, SECRET};
        use proptest::prelude::*;
        use serde_json::json;

        fn any_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(serde_json::Value::from),
                ".{0,20}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("sub".to_owned()),
                            Just("exp".to_owned()),
                            Just("nbf".to_owned()),
                            Just("iss".to_owned()),
                            Just("aud".to_owned()),
                            Just("tenant".to_owned()),
                            Just("roles".to_owned()),
                            "[a-z]{1,3}",
                        ],
                        inner,
                        0..8,
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn all_checks() -> ClaimChecks {
            ClaimChecks {
                issuer: Some("i".into()),
                audience: Some("a".into()),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_headers_never_panic(header in prop_oneof![
                any::<String>(),
                "(Bearer|bearer|Basic)? ?[A-Za-z0-9_=.+/-]{0,200}",
                "Bearer [A-Za-z0-9_-]{0,60}=?=?\\.[A-Za-z0-9_-]{0,60}=?\\.[A-Za-z0-9_-]{0,60}=?",
            ]) {
                let _ = authenticate(Some(&header), SECRET, NOW);
                let _ = authenticate_with(Some(&header), SECRET, NOW, &all_checks());
            }

            #[test]
            fn signed_arbitrary_claims_never_panic(claims in any_json(), now in any::<f64>()) {
                let t = format!("Bearer {}", sign_hs256(&claims, SECRET));
                let _ = authenticate(Some(&t), SECRET, now);
                let _ = authenticate_with(Some(&t), SECRET, NOW, &all_checks());
            }

            #[test]
            fn a_valid_token_with_any_single_byte_changed_is_rejected(
                at in any::<prop::sample::Index>(),
                to in 0x21u8..0x7f,
            ) {
                let claims = json!({"sub":"u1","exp":NOW+60.0,"iss":"i","aud":"a"});
                let token = sign_hs256(&claims, SECRET);
                let valid = format!("Bearer {token}");
                prop_assert!(authenticate_with(Some(&valid), SECRET, NOW, &all_checks()).is_ok());
                let mut bytes = token.clone().into_bytes();
                let i = at.index(bytes.len());
                prop_assume!(bytes[i] != to);
                bytes[i] = to;
                let forged = String::from_utf8(bytes).unwrap();
                prop_assert!(
                    authenticate(Some(&format!("Bearer {forged}")), SECRET, NOW).is_err(),
                    "accepted {}", forged
                );
            }

            #[test]
            fn remembering_never_changes_the_answer(
                claims in prop::collection::vec((0u8..4, -90.0f64..90.0, prop::option::of(-90.0f64..90.0)), 1..6),
                at in prop::collection::vec((0usize..6, -120.0f64..120.0, any::<bool>()), 1..24),
            ) {
                // A few tokens (some with a bad signature), used in any order at
                // any time, with or without the claim checks: the remembered
                // answer is always the full check's.
                let tokens: Vec<String> = claims.iter().map(|(sub, exp, nbf)| {
                    let mut c = json!({"sub":format!("u{sub}"),"exp":NOW+exp,"iss":"i","aud":"a"});
                    if let Some(nbf) = nbf { c["nbf"] = json!(NOW + nbf); }
                    let secret: &[u8] = if *sub == 3 { b"other" } else { SECRET };
                    format!("Bearer {}", sign_hs256(&c, secret))
                }).collect();
                let mut remembered = VerifiedTokens::default();
                for (i, dt, checked) in at {
                    let header = &tokens[i % tokens.len()];
                    let checks = if checked { all_checks() } else { ClaimChecks::default() };
                    let full = authenticate_with(Some(header), SECRET, NOW + dt, &checks);
                    // What is recalled is always the full check's answer.
                    if let Some(caller) = remembered.recall(Some(header), SECRET, NOW + dt, &checks) {
                        prop_assert_eq!(Ok(caller.clone()), full.clone());
                    }
                    prop_assert_eq!(
                        remembered.authenticate(Some(header), SECRET, NOW + dt, &checks),
                        full
                    );
                }
            }

            #[test]
            fn a_valid_token_with_anything_appended_is_rejected(suffix in "[=A-Za-z0-9_.-]{1,4}") {
                let token = sign_hs256(&json!({"sub":"u1","exp":NOW+60.0}), SECRET);
                let forged = format!("Bearer {token}{suffix}");
                prop_assert!(authenticate(Some(&forged), SECRET, NOW).is_err(), "accepted {}", forged);
            }
        }
    }
}
