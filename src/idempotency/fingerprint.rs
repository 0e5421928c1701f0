//! Request fingerprint: SHA-256 over `METHOD \n route-template \n canonical body`.
//!
//! The key and the credentials are never part of it: the same payload sent by the
//! same tenant with the same key is the same request, whoever's token carried it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a request's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// `is_json` says the body was declared JSON; if it then parses, it is hashed in
    /// canonical form, otherwise (or for any other body) as raw bytes.
    pub fn compute(method: &str, route: &str, body: &[u8], is_json: bool) -> Self {
        let mut h = Sha256::new();
        h.update(method.as_bytes());
        h.update(b"\n");
        h.update(route.as_bytes());
        h.update(b"\n");
        match is_json
            .then(|| serde_json::from_slice::<Value>(body).ok())
            .flatten()
        {
            Some(v) => h.update(canonical_json(&v).as_bytes()),
            None => h.update(body),
        }
        Fingerprint(hex(&h.finalize()))
    }

    pub fn from_hex(s: String) -> Self {
        Fingerprint(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Canonical JSON: object keys sorted (by code point) at every depth, no
/// insignificant whitespace, numbers written as parsed. Keys are sorted here
/// explicitly rather than relying on `serde_json::Map`'s order, which a feature
/// elsewhere in the dependency tree (`preserve_order`) could change.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::compute("POST", "/v1/documents", body.as_bytes(), true)
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        assert_eq!(fp(r#"{"a":1,"b":2}"#), fp("{ \"b\":2,\n \"a\":1 }"));
        assert_eq!(
            fp(r#"{"x":{"z":[1,{"q":true,"p":null}],"y":"s"}}"#),
            fp(r#"{ "x" : { "y":"s", "z":[ 1, {"p":null, "q":true} ] } }"#)
        );
    }

    #[test]
    fn values_matter() {
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":2}"#));
        assert_ne!(fp(r#"{"a":"1"}"#), fp(r#"{"a":1}"#));
        assert_ne!(fp(r#"{"a":[1,2]}"#), fp(r#"{"a":[2,1]}"#));
        assert_ne!(fp(r#"{"a":null}"#), fp(r#"{}"#));
    }

    #[test]
    fn method_and_route_matter() {
        let body = br#"{"a":1}"#;
        let a = Fingerprint::compute("POST", "/v1/documents", body, true);
        assert_ne!(a, Fingerprint::compute("PUT", "/v1/documents", body, true));
        assert_ne!(a, Fingerprint::compute("POST", "/v1/other", body, true));
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes() {
        let a = Fingerprint::compute("POST", "/f", b"{ \"a\":1}", false);
        let b = Fingerprint::compute("POST", "/f", b"{\"a\":1}", false);
        assert_ne!(a, b);
        let c = Fingerprint::compute("POST", "/f", b"not json", true);
        assert_eq!(c, Fingerprint::compute("POST", "/f", b"not json", false));
    }

    #[test]
    fn canonical_form_is_compact_and_sorted() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, "é\n"], "a": {"d":1,"c":2} }"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":2,"d":1},"b":[1,2.5,"é\n"]}"#
        );
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        let f = fp("{}");
        assert_eq!(f.as_str().len(), 64);
        assert!(f
            .as_str()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
