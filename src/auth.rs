//! Bearer tokens: HS256 JWTs signed with `AUTH_JWT_SECRET`.
//!
//! Only HS256 is accepted: the algorithm comes from our configuration, never from
//! the token, so `alg: none` or an RS/HS confusion cannot pass. The MAC is checked
//! by `hmac`'s constant-time comparison.

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    NotBearer,
    Malformed(&'static str),
    UnsupportedAlg(String),
    BadSignature,
    Expired,
    NotYetValid,
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
}

/// Verifies an `Authorization` header value at `now_secs` (seconds since the epoch).
pub fn authenticate(
    header: Option<&str>,
    secret: &[u8],
    now_secs: f64,
) -> Result<Caller, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    verify_hs256(token.trim(), secret, now_secs)
}

fn decode_segment(seg: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(seg.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed(what))
}

/// Verifies a compact JWS with HS256 and reads the claims.
pub fn verify_hs256(token: &str, secret: &[u8], now_secs: f64) -> Result<Caller, AuthError> {
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
    let signature = decode_segment(s, "signature is not base64url")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::BadSignature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&decode_segment(p, "payload is not base64url")?)
        .map_err(|_| AuthError::Malformed("claims need sub (string) and exp (number)"))?;
    if claims.sub.is_empty() {
        return Err(AuthError::Malformed("sub is empty"));
    }
    if now_secs >= claims.exp {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now_secs < nbf) {
        return Err(AuthError::NotYetValid);
    }
    let tenant = claims
        .tenant
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| claims.sub.clone());
    Ok(Caller {
        sub: claims.sub,
        tenant,
        roles: claims.roles,
    })
}

/// Signs claims as an HS256 JWT. Used by tests and by `scripts/token.sh`-style tooling.
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

    #[test]
    fn not_yet_valid_token_is_rejected() {
        let t = token(json!({"sub":"u1","exp":NOW+60.0,"nbf":NOW+30.0}));
        assert_eq!(
            authenticate(Some(&t), SECRET, NOW),
            Err(AuthError::NotYetValid)
        );
    }
}
