//! JSON Pointers (RFC 6901) into a token's claims: where `AUTH_TENANT_CLAIM`
//! and `AUTH_ROLES_CLAIM` find the tenant and the roles
//! (`/app_metadata/tenant_id`, `/https:~1~1example.com~1roles`).

use serde_json::Value;
use std::fmt;

/// A parsed JSON Pointer: `/` then reference tokens separated by `/`, each
/// with `~1` for `/` and `~0` for `~`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// The pointer to the top-level claim `name` (one plain token: no `/`
    /// or `~` to escape), which cannot fail.
    pub fn claim(name: &str) -> Pointer {
        Pointer {
            text: format!("/{}", name.replace('~', "~0").replace('/', "~1")),
            tokens: vec![name.to_string()],
        }
    }

    /// Parses a pointer. The empty pointer (the whole claims set) is refused:
    /// it never names a claim.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON Pointer: it must start with '/'"
            ));
        };
        let tokens = rest
            .split('/')
            .map(unescape)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!("{text:?} is not a JSON Pointer: '~' must be followed by '0' or '1'")
            })?;
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The value the pointer names in `doc`, if there is one. An array is
    /// indexed by a decimal index without leading zeros (`-` names nothing).
    pub fn resolve<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        self.tokens.iter().try_fold(doc, |at, token| match at {
            Value::Object(map) => map.get(token),
            Value::Array(items) => index(token).and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// The pointer as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One reference token with `~1` and `~0` decoded, in that order's effect:
/// `~01` is `~1`, never `/`.
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn index(token: &str) -> Option<usize> {
    let canonical = token == "0"
        || (!token.starts_with('0')
            && !token.is_empty()
            && token.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| token.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_pointer_is_the_parsed_pointer_to_that_claim() {
        for name in ["tenant", "roles", "a/b", "x~y"] {
            let p = Pointer::claim(name);
            assert_eq!(Pointer::parse(&p.text), Ok(p.clone()), "{name}");
        }
    }
    use serde_json::json;

    fn at<'a>(pointer: &str, doc: &'a Value) -> Option<&'a Value> {
        Pointer::parse(pointer).unwrap().resolve(doc)
    }

    #[test]
    fn rfc_6901_examples_resolve() {
        // RFC 6901 §5.
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3,
            "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        assert_eq!(at("/foo", &doc), Some(&json!(["bar", "baz"])));
        assert_eq!(at("/foo/0", &doc), Some(&json!("bar")));
        assert_eq!(at("/", &doc), Some(&json!(0)));
        assert_eq!(at("/a~1b", &doc), Some(&json!(1)));
        assert_eq!(at("/c%d", &doc), Some(&json!(2)));
        assert_eq!(at("/ ", &doc), Some(&json!(7)));
        assert_eq!(at("/m~0n", &doc), Some(&json!(8)));
    }

    #[test]
    fn provider_claims_resolve() {
        let supabase = json!({"sub":"u","app_metadata":{"tenant_id":"acme","roles":["admin"]}});
        assert_eq!(
            at("/app_metadata/tenant_id", &supabase),
            Some(&json!("acme"))
        );
        assert_eq!(
            at("/app_metadata/roles", &supabase),
            Some(&json!(["admin"]))
        );
        let auth0 = json!({"https://example.com/roles": ["approver"]});
        assert_eq!(
            at("/https:~1~1example.com~1roles", &auth0),
            Some(&json!(["approver"]))
        );
        assert_eq!(at("/https://example.com/roles", &auth0), None);
    }

    #[test]
    fn escapes_decode_in_order_and_bad_escapes_are_refused() {
        let doc = json!({"~1": "tilde-one", "/": "slash"});
        assert_eq!(at("/~01", &doc), Some(&json!("tilde-one")));
        assert_eq!(at("/~1", &doc), Some(&json!("slash")));
        for bad in ["/~", "/a~2", "/~a", "/x/~"] {
            assert!(Pointer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pointer_must_start_with_a_slash() {
        for bad in [
            "",
            "tenant",
            "app_metadata/tenant_id",
            " /tenant",
            "#/tenant",
        ] {
            assert!(Pointer::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Pointer::parse("/tenant").unwrap().as_str(), "/tenant");
    }

    #[test]
    fn array_indices_are_canonical_decimals() {
        let doc = json!({"a": ["x", "y"]});
        assert_eq!(at("/a/1", &doc), Some(&json!("y")));
        for missing in [
            "/a/01", "/a/-", "/a/2", "/a/+1", "/a/", "/a/1/b", "/b", "/a/x",
        ] {
            assert_eq!(at(missing, &doc), None, "{missing}");
        }
        // A key that looks like an index is an object's key.
        assert_eq!(at("/0", &json!({"0": 1})), Some(&json!(1)));
    }
}
