//! Bearer tokens: JWTs signed HS256 with `AUTH_JWT_SECRET`, or RS256, ES256 or
//! EdDSA with a key of the JWKS at `AUTH_JWKS_URL` ([`jwks`]).
//!
//! The token's `alg` chooses between the two, never the key: HS256 is only
//! ever checked with the secret (constant-time, `hmac`), and the others only
//! with a JWKS key of that algorithm whose `kid` is the token's — so
//! `alg: none`, an HS256 token "signed" with a public key, or a key used for
//! another algorithm cannot pass. A header with `crit` is refused (no
//! extension is understood). The JWKS signature itself is checked by the
//! runtime's WebCrypto: [`VerifiedTokens::resolve`] then answers
//! [`Resolved::Verify`], and [`VerifiedTokens::complete`] takes the result.
//!
//! A token has exactly one accepted spelling: each of the three segments must be
//! canonical unpadded base64url (no `=`, no stray bits in the last character), so
//! a valid token with anything appended or re-encoded is rejected rather than
//! accepted as a second "same" token. Tokens above [`MAX_TOKEN_BYTES`] are
//! rejected before any decoding. `exp` is required, `nbf` honoured. When
//! `AUTH_JWT_ISSUER` / `AUTH_JWT_AUDIENCE` are set ([`ClaimChecks`]), `iss` must
//! equal the issuer and `aud` (a string or an array of strings, RFC 7519
//! §4.1.3) must contain the audience; unset, those claims are not looked at.
//! The tenant and the roles are read where [`ClaimMapping`]'s JSON Pointers
//! say (`AUTH_TENANT_CLAIM`, `AUTH_ROLES_CLAIM`).
//!
//! The token comes from `Authorization: Bearer …`, or, when that header is
//! absent, from Cloudflare Access's `Cf-Access-Jwt-Assertion` ([`credential`]).

pub mod jwks;
pub mod pointer;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jwks::Alg;
use pointer::Pointer;
use serde_json::Value;
use sha2::Sha256;
use std::fmt;

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    /// The idempotency scope and data owner; the tenant claim, or `sub`.
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

/// The request header Cloudflare Access puts its token in.
pub const ACCESS_HEADER: &str = "cf-access-jwt-assertion";

/// Optional claim checks from the configuration (`AUTH_JWT_ISSUER`,
/// `AUTH_JWT_AUDIENCE`); `None` means the claim is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimChecks {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Where the tenant and the roles are in the claims (`AUTH_TENANT_CLAIM`,
/// `AUTH_ROLES_CLAIM`): `/tenant` and `/roles` unless configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub tenant: Pointer,
    pub roles: Pointer,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            tenant: Pointer::claim("tenant"),
            roles: Pointer::claim("roles"),
        }
    }
}

/// How tokens are verified: fixed for an isolate's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `AUTH_JWT_SECRET`, for HS256 (none: HS256 tokens are refused).
    pub secret: Option<Vec<u8>>,
    /// Whether `AUTH_JWKS_URL` is set (otherwise only HS256 is accepted).
    pub jwks: bool,
    pub checks: ClaimChecks,
    pub claims: ClaimMapping,
}

impl Rules {
    /// HS256 with `secret` (empty: none) and these checks, the default claims.
    pub fn hs256(secret: &[u8], checks: &ClaimChecks) -> Rules {
        Rules {
            secret: (!secret.is_empty()).then(|| secret.to_vec()),
            jwks: false,
            checks: checks.clone(),
            claims: ClaimMapping::default(),
        }
    }

    /// Whether any token can be accepted at all.
    pub fn configured(&self) -> bool {
        self.secret.is_some() || self.jwks
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    NotBearer,
    Malformed(&'static str),
    UnsupportedAlg(String),
    /// The header names extensions (`crit`) that must be understood.
    UnsupportedCrit,
    BadSignature,
    Expired,
    NotYetValid,
    TooLarge,
    WrongIssuer,
    WrongAudience,
    /// The JWKS holds no key of the token's `kid`.
    UnknownKey(String),
    /// The JWKS key of the token's `kid` is for another algorithm.
    KeyAlgMismatch {
        kid: String,
        key: Alg,
    },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => write!(
                f,
                "the Authorization header is missing (and there is no {ACCESS_HEADER} header)"
            ),
            AuthError::NotBearer => write!(f, "the Authorization header must be 'Bearer <token>'"),
            AuthError::Malformed(why) => write!(f, "the token is malformed: {why}"),
            AuthError::UnsupportedAlg(alg) => {
                write!(f, "the token's algorithm {alg:?} is not accepted here")
            }
            AuthError::UnsupportedCrit => {
                write!(
                    f,
                    "the token's header lists critical extensions (crit), which are not supported"
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
            AuthError::UnknownKey(kid) => {
                write!(f, "the token's key (kid {kid:?}) is not in the JWKS")
            }
            AuthError::KeyAlgMismatch { kid, key } => write!(
                f,
                "the JWKS key {kid:?} is for {}, not the token's algorithm",
                key.name()
            ),
        }
    }
}

/// The token's claims, read: who it names and when it is valid.
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

/// Reads the claims: `sub` (a non-empty string), `exp` (a number), `nbf` (a
/// number, if present), the tenant (a string where `claims.tenant` points;
/// absent, null or empty: `sub`) and the roles (a string or an array of
/// strings where `claims.roles` points; absent or null: none), then the
/// configured `iss` / `aud` checks. Time is checked by [`Verified::in_time`].
fn read_claims(payload: &[u8], rules: &Rules) -> Result<Verified, AuthError> {
    let claims: Value = serde_json::from_slice(payload)
        .map_err(|_| AuthError::Malformed("the claims are not JSON"))?;
    if !claims.is_object() {
        return Err(AuthError::Malformed("the claims are not a JSON object"));
    }
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(AuthError::Malformed("sub is empty")),
        _ => {
            return Err(AuthError::Malformed(
                "claims need sub (string) and exp (number)",
            ))
        }
    };
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(AuthError::Malformed(
            "claims need sub (string) and exp (number)",
        ))?;
    let nbf = match claims.get("nbf") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or(AuthError::Malformed("nbf is not a number"))?,
        ),
    };
    let tenant = match rules.claims.tenant.resolve(&claims) {
        None | Some(Value::Null) => sub.clone(),
        Some(Value::String(t)) if t.is_empty() => sub.clone(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(AuthError::Malformed("the tenant claim is not a string")),
    };
    let roles = match rules.claims.roles.resolve(&claims) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(r)) => vec![r.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(AuthError::Malformed(
                "the roles claim is not a string or an array of strings",
            ))?,
        Some(_) => {
            return Err(AuthError::Malformed(
                "the roles claim is not a string or an array of strings",
            ))
        }
    };
    let checks = &rules.checks;
    if let Some(issuer) = &checks.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(AuthError::WrongIssuer);
        }
    }
    if let Some(audience) = &checks.audience {
        let listed = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(items)) => {
                items.iter().any(|a| a.as_str() == Some(audience.as_str()))
            }
            _ => false,
        };
        if !listed {
            return Err(AuthError::WrongAudience);
        }
    }
    Ok(Verified {
        caller: Caller { sub, tenant, roles },
        exp,
        nbf,
    })
}

/// Verifies an `Authorization` header value at `now_secs` (seconds since the
/// epoch) with HS256, without issuer or audience checks.
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

/// The token of a request: `Authorization: Bearer <token>` when that header
/// is present (it decides, whatever else is sent), else the
/// `Cf-Access-Jwt-Assertion` header's value.
pub fn credential<'h>(
    authorization: Option<&'h str>,
    access: Option<&'h str>,
) -> Result<&'h str, AuthError> {
    match (
        authorization,
        access.map(str::trim).filter(|a| !a.is_empty()),
    ) {
        (Some(header), _) => bearer(Some(header)),
        (None, Some(token)) => Ok(token),
        (None, None) => Err(AuthError::Missing),
    }
}

/// The header [`credential`] takes the token from: `authorization` when that
/// header is present, else `access` (`Cf-Access-Jwt-Assertion`).
pub fn credential_header(authorization: Option<&str>) -> &'static str {
    if authorization.is_some() {
        "authorization"
    } else {
        "access"
    }
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
    match check(token, &Rules::hs256(secret, checks), now_secs) {
        Checked::Done(v) => v.map(|v| v.caller),
        // HS256-only rules never ask for a JWKS key.
        Checked::Jwks(_) => Err(AuthError::UnsupportedAlg("JWKS".into())),
    }
}

/// A compact JWS's parts, its header read.
#[derive(Debug)]
struct Parsed<'t> {
    alg: String,
    kid: Option<String>,
    signing_input: &'t str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits and decodes a token and reads its header: `alg` (a string), `kid`
/// (a string, if present); a header with `crit` is refused.
fn parse(token: &str) -> Result<Parsed<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    let header: Value = serde_json::from_slice(&decode_segment(h, "header is not base64url")?)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))?;
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(AuthError::Malformed("header is not a JSON object with alg"));
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed("kid is not a string")),
    };
    if header.get("crit").is_some() {
        return Err(AuthError::UnsupportedCrit);
    }
    Ok(Parsed {
        alg: alg.clone(),
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload: decode_segment(p, "payload is not base64url")?,
        signature: decode_segment(s, "signature is not base64url")?,
    })
}

/// A token whose signature is for a JWKS key to check: which key, what was
/// signed, and its claims as read (or why they were refused, answered only
/// once the signature holds).
#[derive(Debug, Clone)]
pub struct Pending {
    token: String,
    pub kid: String,
    pub alg: Alg,
    pub signing_input: String,
    pub signature: Vec<u8>,
    claims: Result<Verified, AuthError>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.token == other.token
    }
}

impl Eq for Pending {}

/// What checking a token found without the runtime's help.
enum Checked {
    Done(Result<Verified, AuthError>),
    Jwks(Pending),
}

/// Checks a token under `rules`: HS256 in full; for a JWKS algorithm, all
/// but the signature.
fn check(token: &str, rules: &Rules, now_secs: f64) -> Checked {
    let parsed = match parse(token) {
        Ok(p) => p,
        Err(e) => return Checked::Done(Err(e)),
    };
    if parsed.alg == "HS256" {
        let Some(secret) = rules.secret.as_deref() else {
            return Checked::Done(Err(AuthError::UnsupportedAlg(parsed.alg)));
        };
        let verified = (|| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::BadSignature)?;
            mac.update(parsed.signing_input.as_bytes());
            mac.verify_slice(&parsed.signature)
                .map_err(|_| AuthError::BadSignature)?;
            let verified = read_claims(&parsed.payload, rules)?;
            verified.in_time(now_secs)?;
            Ok(verified)
        })();
        return Checked::Done(verified);
    }
    let alg = match Alg::of(&parsed.alg) {
        Some(alg) if rules.jwks => alg,
        _ => return Checked::Done(Err(AuthError::UnsupportedAlg(parsed.alg))),
    };
    let Some(kid) = parsed.kid.filter(|k| !k.is_empty()) else {
        return Checked::Done(Err(AuthError::Malformed(
            "a token signed with a JWKS key needs a kid",
        )));
    };
    if !alg.signature_fits(&parsed.signature) {
        return Checked::Done(Err(AuthError::BadSignature));
    }
    Checked::Jwks(Pending {
        token: token.to_string(),
        kid,
        alg,
        signing_input: parsed.signing_input.to_string(),
        signature: parsed.signature,
        claims: read_claims(&parsed.payload, rules),
    })
}

/// How many verified tokens an isolate remembers; when full it forgets them all
/// (a bound on memory, not a policy: the next use of each verifies it again).
/// With tokens of at most [`MAX_TOKEN_BYTES`], at most 8 MiB.
pub const REMEMBERED_TOKENS: usize = 1024;

/// What [`VerifiedTokens::resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Caller(Caller),
    Refused(AuthError),
    /// Not remembered, and verifying was not allowed.
    Unverified,
    /// All but the signature checked: a JWKS key must verify it
    /// ([`VerifiedTokens::complete`]).
    Verify(Box<Pending>),
}

/// Tokens this isolate has verified, so that a caller's next request skips the
/// base64, the signature check and the claims parse (a V8 profile of `wrangler
/// dev` put the full HS256 check at 9 % of a replay's CPU; a JWKS token's is a
/// WebCrypto call). A token is remembered only once it passed in full, under
/// the rules it passed with: other rules forget them all. `exp` and `nbf` are
/// checked again on every use, so a token is never used beyond its `exp`; a
/// token that failed is never remembered, so a bad one costs the full check
/// each time.
#[derive(Default)]
pub struct VerifiedTokens {
    rules: Rules,
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
        match self.resolve(header, None, &Rules::hs256(secret, checks), now_secs, true) {
            Resolved::Caller(caller) => Ok(caller),
            Resolved::Refused(e) => Err(e),
            // Never answered when verifying is allowed, or under HS256 rules.
            Resolved::Unverified | Resolved::Verify(_) => Err(AuthError::Missing),
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
        match self.resolve(header, None, &Rules::hs256(secret, checks), now_secs, false) {
            Resolved::Caller(caller) => Some(caller),
            _ => None,
        }
    }

    /// The one resolution of a request's caller, from its `Authorization`
    /// and `Cf-Access-Jwt-Assertion` headers ([`credential`]). A token
    /// remembered under these rules answers from memory, `exp` and `nbf`
    /// checked again at `now_secs`. Anything else is checked in full when
    /// `may_verify` allows it (and remembered if it passes) — except a JWKS
    /// signature, which is [`Resolved::Verify`] for the caller to check and
    /// hand to [`Self::complete`]. When `may_verify` does not allow it, the
    /// answer is [`Resolved::Unverified`] and nothing is parsed: only a lookup
    /// and string slicing, so nothing a client sends reaches a parser (the
    /// Worker's quick passthrough runs outside its panic guard:
    /// `frontend_worker::quick_pass`).
    pub fn resolve(
        &mut self,
        authorization: Option<&str>,
        access: Option<&str>,
        rules: &Rules,
        now_secs: f64,
        may_verify: bool,
    ) -> Resolved {
        let same_rules = self.rules == *rules;
        if !may_verify {
            let known = credential(authorization, access)
                .ok()
                .filter(|_| same_rules)
                .and_then(|token| self.tokens.get(token))
                .filter(|known| known.in_time(now_secs).is_ok());
            return match known {
                Some(known) => Resolved::Caller(known.caller.clone()),
                None => Resolved::Unverified,
            };
        }
        let token = match credential(authorization, access) {
            Ok(token) => token,
            Err(e) => return Resolved::Refused(e),
        };
        if !same_rules {
            self.tokens.clear();
            self.rules = rules.clone();
        }
        if let Some(known) = self.tokens.get(token) {
            return match known.in_time(now_secs) {
                Ok(()) => Resolved::Caller(known.caller.clone()),
                Err(e) => Resolved::Refused(e),
            };
        }
        match check(token, rules, now_secs) {
            Checked::Done(Ok(verified)) => self.remember(token.to_string(), verified),
            Checked::Done(Err(e)) => Resolved::Refused(e),
            Checked::Jwks(pending) => Resolved::Verify(Box::new(pending)),
        }
    }

    /// A [`Resolved::Verify`] token once its signature was checked with the
    /// JWKS key of its `kid` (`Ok`: it verified), at `now_secs`: its claims,
    /// then its time; remembered if it passes.
    pub fn complete(
        &mut self,
        pending: Pending,
        signature: Result<(), AuthError>,
        now_secs: f64,
    ) -> Resolved {
        let verified = signature.and(pending.claims).and_then(|v| {
            v.in_time(now_secs)?;
            Ok(v)
        });
        match verified {
            Ok(v) => self.remember(pending.token, v),
            Err(e) => Resolved::Refused(e),
        }
    }

    fn remember(&mut self, token: String, verified: Verified) -> Resolved {
        if self.tokens.len() >= REMEMBERED_TOKENS {
            self.tokens.clear();
        }
        let caller = verified.caller.clone();
        self.tokens.insert(token, verified);
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

#[cfg(test)]
mod rules_tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"rules-secret";
    const NOW: f64 = 1_700_000_000.0;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// An unsigned token with this header and a fake signature of `sig_len` bytes.
    fn unsigned(header: Value, claims: Value, sig_len: usize) -> String {
        format!(
            "{}.{}.{}",
            b64(&header),
            b64(&claims),
            URL_SAFE_NO_PAD.encode(vec![7u8; sig_len])
        )
    }

    fn both() -> Rules {
        Rules {
            secret: Some(SECRET.to_vec()),
            jwks: true,
            ..Rules::default()
        }
    }

    fn resolve(tokens: &mut VerifiedTokens, token: &str, rules: &Rules) -> Resolved {
        tokens.resolve(Some(&format!("Bearer {token}")), None, rules, NOW, true)
    }

    fn claims() -> Value {
        json!({"sub":"u1","exp":NOW+60.0})
    }

    #[test]
    fn a_jwks_token_is_checked_but_for_its_signature_and_then_completed() {
        let mut tokens = VerifiedTokens::default();
        let t = unsigned(json!({"alg":"RS256","kid":"k1"}), claims(), 256);
        let Resolved::Verify(pending) = resolve(&mut tokens, &t, &both()) else {
            panic!("expected a signature to check");
        };
        assert_eq!((pending.kid.as_str(), pending.alg), ("k1", Alg::Rs256));
        assert_eq!(pending.signing_input, t[..t.rfind('.').unwrap()]);
        // A signature that does not verify: refused and not remembered.
        let refused = tokens.complete((*pending).clone(), Err(AuthError::BadSignature), NOW);
        assert_eq!(refused, Resolved::Refused(AuthError::BadSignature));
        assert!(tokens.is_empty());
        // One that does: the caller, remembered (the next use needs no key).
        let ok = tokens.complete(*pending, Ok(()), NOW);
        assert!(matches!(ok, Resolved::Caller(ref c) if c.sub == "u1"));
        assert_eq!(tokens.len(), 1);
        assert_eq!(resolve(&mut tokens, &t, &both()), ok);
        let quick = tokens.resolve(Some(&format!("Bearer {t}")), None, &both(), NOW, false);
        assert_eq!(quick, ok);
        // Never beyond its exp.
        let late = tokens.resolve(
            Some(&format!("Bearer {t}")),
            None,
            &both(),
            NOW + 60.0,
            true,
        );
        assert_eq!(late, Resolved::Refused(AuthError::Expired));
    }

    #[test]
    fn claims_are_answered_only_once_the_signature_holds() {
        let mut tokens = VerifiedTokens::default();
        let rules = Rules {
            checks: ClaimChecks {
                issuer: Some("https://team.cloudflareaccess.com".into()),
                audience: Some("aud-tag".into()),
            },
            ..both()
        };
        for (claims, error) in [
            (
                json!({"sub":"u","exp":NOW-1.0,"iss":"https://team.cloudflareaccess.com","aud":["aud-tag"]}),
                AuthError::Expired,
            ),
            (
                json!({"sub":"u","exp":NOW+60.0,"nbf":NOW+30.0,"iss":"https://team.cloudflareaccess.com","aud":"aud-tag"}),
                AuthError::NotYetValid,
            ),
            (
                json!({"sub":"u","exp":NOW+60.0,"iss":"https://evil.example","aud":"aud-tag"}),
                AuthError::WrongIssuer,
            ),
            (
                json!({"sub":"u","exp":NOW+60.0,"iss":"https://team.cloudflareaccess.com","aud":"other"}),
                AuthError::WrongAudience,
            ),
            (
                json!({"sub":"u","iss":"https://team.cloudflareaccess.com","aud":"aud-tag"}),
                AuthError::Malformed("claims need sub (string) and exp (number)"),
            ),
        ] {
            let t = unsigned(json!({"alg":"ES256","kid":"k"}), claims.clone(), 64);
            let Resolved::Verify(pending) = resolve(&mut tokens, &t, &rules) else {
                panic!("{claims}");
            };
            assert_eq!(
                tokens.complete((*pending).clone(), Err(AuthError::BadSignature), NOW),
                Resolved::Refused(AuthError::BadSignature)
            );
            assert_eq!(
                tokens.complete(*pending, Ok(()), NOW),
                Resolved::Refused(error),
                "{claims}"
            );
        }
        assert!(tokens.is_empty());
    }

    #[test]
    fn hs256_is_never_verified_with_a_jwks_key_and_jwks_algs_never_with_the_secret() {
        let mut tokens = VerifiedTokens::default();
        // HS256 under both: the secret decides at once, no key is asked for.
        let good = sign_hs256(&claims(), SECRET);
        assert!(matches!(
            resolve(&mut tokens, &good, &both()),
            Resolved::Caller(_)
        ));
        let forged = sign_hs256(&claims(), b"-----BEGIN PUBLIC KEY-----");
        assert_eq!(
            resolve(&mut tokens, &forged, &both()),
            Resolved::Refused(AuthError::BadSignature)
        );
        // No secret: HS256 is refused whatever it is signed with.
        let jwks_only = Rules {
            secret: None,
            ..both()
        };
        assert_eq!(
            resolve(&mut tokens, &good, &jwks_only),
            Resolved::Refused(AuthError::UnsupportedAlg("HS256".into()))
        );
        // No JWKS: RS256 is refused, never checked with the secret.
        let t = unsigned(json!({"alg":"RS256","kid":"k"}), claims(), 256);
        let hs_only = Rules {
            jwks: false,
            ..both()
        };
        assert_eq!(
            resolve(&mut tokens, &t, &hs_only),
            Resolved::Refused(AuthError::UnsupportedAlg("RS256".into()))
        );
    }

    #[test]
    fn none_unknown_algs_crit_and_missing_kids_are_refused() {
        let mut tokens = VerifiedTokens::default();
        for alg in ["none", "None", "HS384", "RS512", "PS256", "ES384", "rs256"] {
            let t = unsigned(json!({"alg":alg,"kid":"k"}), claims(), 256);
            assert_eq!(
                resolve(&mut tokens, &t, &both()),
                Resolved::Refused(AuthError::UnsupportedAlg(alg.into())),
                "{alg}"
            );
        }
        let none = format!("{}.{}.", b64(&json!({"alg":"none"})), b64(&claims()));
        assert!(matches!(
            resolve(&mut tokens, &none, &both()),
            Resolved::Refused(_)
        ));
        for crit in [json!(["exp"]), json!([]), json!(null), json!("b64")] {
            let t = unsigned(json!({"alg":"ES256","kid":"k","crit":crit}), claims(), 64);
            assert_eq!(
                resolve(&mut tokens, &t, &both()),
                Resolved::Refused(AuthError::UnsupportedCrit),
                "{crit}"
            );
        }
        // crit on an HS256 token too, even a validly signed one.
        let h = b64(&json!({"alg":"HS256","crit":["x"],"x":1}));
        let p = b64(&claims());
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(
            resolve(&mut tokens, &format!("{h}.{p}.{s}"), &both()),
            Resolved::Refused(AuthError::UnsupportedCrit)
        );
        for header in [
            json!({"alg":"RS256"}),
            json!({"alg":"RS256","kid":""}),
            json!({"alg":"RS256","kid":7}),
        ] {
            let t = unsigned(header.clone(), claims(), 256);
            assert!(
                matches!(
                    resolve(&mut tokens, &t, &both()),
                    Resolved::Refused(AuthError::Malformed(_))
                ),
                "{header}"
            );
        }
        // A signature of the wrong shape is refused before any key is looked for.
        for (alg, len) in [("ES256", 72), ("ES256", 0), ("RS256", 64), ("EdDSA", 32)] {
            let t = unsigned(json!({"alg":alg,"kid":"k"}), claims(), len);
            assert_eq!(
                resolve(&mut tokens, &t, &both()),
                Resolved::Refused(AuthError::BadSignature),
                "{alg} {len}"
            );
        }
    }

    #[test]
    fn authorization_decides_and_the_access_header_is_used_without_it() {
        assert_eq!(credential(Some("Bearer a.b.c"), Some("x.y.z")), Ok("a.b.c"));
        assert_eq!(credential(None, Some(" x.y.z ")), Ok("x.y.z"));
        assert_eq!(
            credential(Some("Basic abc"), Some("x.y.z")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            credential(Some(""), Some("x.y.z")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(credential(None, Some("  ")), Err(AuthError::Missing));
        assert_eq!(credential(None, None), Err(AuthError::Missing));
        // The header the token is taken from, as `GET /v1/me` names it.
        assert_eq!(credential_header(Some("Bearer a.b.c")), "authorization");
        assert_eq!(credential_header(Some("")), "authorization");
        assert_eq!(credential_header(None), "access");
        // Through the resolution: a bad Authorization beside a good Access token is refused.
        let mut tokens = VerifiedTokens::default();
        let good = sign_hs256(&claims(), SECRET);
        let rules = Rules::hs256(SECRET, &ClaimChecks::default());
        assert!(matches!(
            tokens.resolve(None, Some(&good), &rules, NOW, true),
            Resolved::Caller(_)
        ));
        assert!(matches!(
            tokens.resolve(None, Some(&good), &rules, NOW, false),
            Resolved::Caller(_)
        ));
        for bad in ["Bearer nope", "Basic x", ""] {
            assert!(matches!(
                tokens.resolve(Some(bad), Some(&good), &rules, NOW, true),
                Resolved::Refused(_)
            ));
            assert_eq!(
                tokens.resolve(Some(bad), Some(&good), &rules, NOW, false),
                Resolved::Unverified
            );
        }
    }

    fn mapped(tenant: &str, roles: &str) -> Rules {
        Rules {
            claims: ClaimMapping {
                tenant: Pointer::parse(tenant).unwrap(),
                roles: Pointer::parse(roles).unwrap(),
            },
            ..Rules::hs256(SECRET, &ClaimChecks::default())
        }
    }

    fn caller(claims: Value, rules: &Rules) -> Result<Caller, AuthError> {
        match VerifiedTokens::default().resolve(
            Some(&format!("Bearer {}", sign_hs256(&claims, SECRET))),
            None,
            rules,
            NOW,
            true,
        ) {
            Resolved::Caller(c) => Ok(c),
            Resolved::Refused(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tenant_and_roles_are_read_where_the_pointers_say() {
        let supabase = mapped("/app_metadata/tenant_id", "/app_metadata/roles");
        let c = caller(
            json!({"sub":"u","exp":NOW+60.0,"tenant":"ignored","roles":["ignored"],
                   "app_metadata":{"tenant_id":"acme","roles":["admin","approver"]}}),
            &supabase,
        )
        .unwrap();
        assert_eq!(
            (c.tenant.as_str(), c.roles.clone()),
            ("acme", vec!["admin".into(), "approver".into()])
        );
        // The tenant falls back to sub: absent, null or empty.
        for app in [
            json!({}),
            json!({"tenant_id":null}),
            json!({"tenant_id":""}),
            json!(null),
        ] {
            let c = caller(
                json!({"sub":"u","exp":NOW+60.0,"app_metadata":app}),
                &supabase,
            )
            .unwrap();
            assert_eq!((c.tenant.as_str(), c.roles.len()), ("u", 0), "{app}");
        }
        let auth0 = mapped(
            "/https:~1~1example.com~1tenant",
            "/https:~1~1example.com~1roles",
        );
        let c = caller(
            json!({"sub":"u","exp":NOW+60.0,"https://example.com/tenant":"t1","https://example.com/roles":"poster"}),
            &auth0,
        )
        .unwrap();
        assert_eq!(
            (c.tenant.as_str(), c.roles.clone()),
            ("t1", vec!["poster".to_string()])
        );
        // Not a string / not strings: refused, never guessed.
        for bad in [
            json!({"sub":"u","exp":NOW+60.0,"app_metadata":{"tenant_id":7}}),
            json!({"sub":"u","exp":NOW+60.0,"app_metadata":{"roles":[1]}}),
            json!({"sub":"u","exp":NOW+60.0,"app_metadata":{"roles":{"admin":true}}}),
            json!({"sub":"u","exp":NOW+60.0,"app_metadata":{"roles":["a",["b"]]}}),
        ] {
            assert!(
                matches!(caller(bad.clone(), &supabase), Err(AuthError::Malformed(_))),
                "{bad}"
            );
        }
        // The defaults read `tenant` and `roles`, a string role included.
        let defaults = Rules::hs256(SECRET, &ClaimChecks::default());
        let c = caller(
            json!({"sub":"u","exp":NOW+60.0,"tenant":"t","roles":"admin"}),
            &defaults,
        )
        .unwrap();
        assert_eq!(
            (c.tenant.as_str(), c.roles.clone()),
            ("t", vec!["admin".to_string()])
        );
    }

    #[test]
    fn other_claim_pointers_forget_what_was_verified() {
        let mut tokens = VerifiedTokens::default();
        let t = sign_hs256(&json!({"sub":"u","exp":NOW+60.0,"org":"o1"}), SECRET);
        let header = format!("Bearer {t}");
        let default = Rules::hs256(SECRET, &ClaimChecks::default());
        let org = mapped("/org", "/roles");
        assert!(
            matches!(tokens.resolve(Some(&header), None, &default, NOW, true), Resolved::Caller(ref c) if c.tenant == "u")
        );
        assert_eq!(
            tokens.resolve(Some(&header), None, &org, NOW, false),
            Resolved::Unverified
        );
        assert!(
            matches!(tokens.resolve(Some(&header), None, &org, NOW, true), Resolved::Caller(ref c) if c.tenant == "o1")
        );
    }

    #[test]
    fn nothing_is_accepted_without_a_secret_or_a_jwks() {
        assert!(!Rules::default().configured());
        assert!(!Rules::hs256(b"", &ClaimChecks::default()).configured());
        assert!(Rules::hs256(SECRET, &ClaimChecks::default()).configured());
        assert!(Rules {
            jwks: true,
            ..Rules::default()
        }
        .configured());
    }

    /// Resolves `token` with a stand-in for WebCrypto: a JWKS signature
    /// verifies when its bytes are all 1.
    fn settle(tokens: &mut VerifiedTokens, token: &str, rules: &Rules, now: f64) -> Resolved {
        match tokens.resolve(None, Some(token), rules, now, true) {
            Resolved::Verify(p) => {
                let ok = p.signature.iter().all(|b| *b == 1);
                let signature = if ok {
                    Ok(())
                } else {
                    Err(AuthError::BadSignature)
                };
                tokens.complete(*p, signature, now)
            }
            other => other,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        #[test]
        fn remembering_a_jwks_token_never_changes_the_answer(
            claims in proptest::collection::vec((0u8..3, -90.0f64..90.0, proptest::option::of(-90.0f64..90.0), proptest::bool::ANY), 1..5),
            at in proptest::collection::vec((0usize..5, -120.0f64..120.0), 1..20),
        ) {
            let rules = both();
            let tokens: Vec<String> = claims.iter().map(|(sub, exp, nbf, good)| {
                let mut c = json!({"sub":format!("u{sub}"),"exp":NOW+exp});
                if let Some(nbf) = nbf { c["nbf"] = json!(NOW + nbf); }
                let h = b64(&json!({"alg":"ES256","kid":"k"}));
                let s = URL_SAFE_NO_PAD.encode([if *good { 1u8 } else { 2 }; 64]);
                format!("{h}.{}.{s}", b64(&c))
            }).collect();
            let mut memory = VerifiedTokens::default();
            for (i, dt) in at {
                let token = &tokens[i % tokens.len()];
                let full = settle(&mut VerifiedTokens::default(), token, &rules, NOW + dt);
                let quick = memory.resolve(None, Some(token), &rules, NOW + dt, false);
                if let Resolved::Caller(_) = quick {
                    proptest::prop_assert_eq!(&quick, &full);
                }
                proptest::prop_assert_eq!(settle(&mut memory, token, &rules, NOW + dt), full);
            }
        }
    }
}
