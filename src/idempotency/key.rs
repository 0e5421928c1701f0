//! `Idempotency-Key` parsing: parse, don't validate.

use std::fmt;

/// Longest key accepted, in bytes (all accepted characters are ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// A syntactically valid idempotency key: 1..=255 characters from
/// `A-Za-z0-9-_.:~+/=`. A value wrapped in double quotes (the RFC 8941 sf-string
/// form used by the IETF draft) is unquoted first.
///
/// It crosses from the Worker to the key's object as text and is parsed again on
/// arrival (`serde(try_from)`), so the object never holds an unchecked key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl TryFrom<String> for IdempotencyKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        IdempotencyKey::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong(usize),
    /// A comma means the header was sent more than once or as a list.
    List,
    InvalidChar(char),
    /// `Idempotency-Key` and `X-Idempotency-Key` both present with different values.
    Conflicting,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "the idempotency key is empty"),
            KeyError::TooLong(n) => write!(
                f,
                "the idempotency key is {n} characters long; at most {MAX_KEY_LEN} are allowed"
            ),
            KeyError::List => write!(
                f,
                "the idempotency key must be a single value, not a list (it contains a comma)"
            ),
            KeyError::InvalidChar(c) => write!(
                f,
                "the idempotency key contains {c:?}; allowed are A-Z a-z 0-9 and - _ . : ~ + / ="
            ),
            KeyError::Conflicting => write!(
                f,
                "Idempotency-Key and X-Idempotency-Key are both present and differ"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '~' | '+' | '/' | '=')
}

impl IdempotencyKey {
    /// Parses one header value.
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        let trimmed = raw.trim_matches(|c| c == ' ' || c == '\t');
        if trimmed.contains(',') {
            return Err(KeyError::List);
        }
        let inner = match trimmed.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or(KeyError::InvalidChar('"'))?,
            None => trimmed,
        };
        if inner.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(bad) = inner.chars().find(|c| !allowed(*c)) {
            return Err(KeyError::InvalidChar(bad));
        }
        if inner.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(inner.len()));
        }
        Ok(IdempotencyKey(inner.to_string()))
    }

    /// A key the server derives itself (e.g. from a content hash). The caller
    /// guarantees the syntax; it is checked in debug builds.
    pub fn derived(value: String) -> Self {
        debug_assert!(IdempotencyKey::parse(&value).is_ok());
        IdempotencyKey(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads the key from the IETF header and the legacy one. Absent from both →
/// `Ok(None)`; both present → they must name the same key.
pub fn key_from_headers(
    ietf: Option<&str>,
    legacy: Option<&str>,
) -> Result<Option<IdempotencyKey>, KeyError> {
    match (ietf, legacy) {
        (None, None) => Ok(None),
        (Some(v), None) | (None, Some(v)) => IdempotencyKey::parse(v).map(Some),
        (Some(a), Some(b)) => {
            let a = IdempotencyKey::parse(a)?;
            let b = IdempotencyKey::parse(b)?;
            if a == b {
                Ok(Some(a))
            } else {
                Err(KeyError::Conflicting)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_are_accepted() {
        for k in [
            "abc",
            "A-Z_0.9:~+/=",
            "550e8400-e29b-41d4-a716-446655440000",
            "x",
        ] {
            assert_eq!(IdempotencyKey::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn quoted_sf_string_is_unquoted() {
        assert_eq!(
            IdempotencyKey::parse("\"8e03978e-40d5\"").unwrap().as_str(),
            "8e03978e-40d5"
        );
        assert_eq!(IdempotencyKey::parse("  \"k1\" ").unwrap().as_str(), "k1");
    }

    #[test]
    fn unbalanced_quote_is_rejected() {
        assert_eq!(
            IdempotencyKey::parse("\"abc"),
            Err(KeyError::InvalidChar('"'))
        );
        assert_eq!(
            IdempotencyKey::parse("abc\""),
            Err(KeyError::InvalidChar('"'))
        );
    }

    #[test]
    fn empty_key_is_rejected_quoted_or_not() {
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse("   "), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse("\"\""), Err(KeyError::Empty));
    }

    #[test]
    fn key_of_255_is_accepted_and_256_rejected() {
        assert!(IdempotencyKey::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&"a".repeat(256)),
            Err(KeyError::TooLong(256))
        );
        assert!(IdempotencyKey::parse(&format!("\"{}\"", "a".repeat(255))).is_ok());
    }

    #[test]
    fn comma_means_a_list_and_is_rejected() {
        assert_eq!(IdempotencyKey::parse("a,b"), Err(KeyError::List));
        assert_eq!(IdempotencyKey::parse("\"a\", \"b\""), Err(KeyError::List));
    }

    #[test]
    fn non_ascii_and_spaces_inside_are_rejected() {
        assert_eq!(
            IdempotencyKey::parse("clé"),
            Err(KeyError::InvalidChar('é'))
        );
        assert_eq!(
            IdempotencyKey::parse("a b"),
            Err(KeyError::InvalidChar(' '))
        );
        assert_eq!(
            IdempotencyKey::parse("a;b"),
            Err(KeyError::InvalidChar(';'))
        );
        assert_eq!(
            IdempotencyKey::parse("🔑"),
            Err(KeyError::InvalidChar('🔑'))
        );
    }

    #[test]
    fn both_headers_must_agree() {
        assert_eq!(key_from_headers(None, None), Ok(None));
        assert_eq!(
            key_from_headers(Some("a"), None).unwrap().unwrap().as_str(),
            "a"
        );
        assert_eq!(
            key_from_headers(None, Some("b")).unwrap().unwrap().as_str(),
            "b"
        );
        assert_eq!(
            key_from_headers(Some("a"), Some("\"a\""))
                .unwrap()
                .unwrap()
                .as_str(),
            "a"
        );
        assert_eq!(
            key_from_headers(Some("a"), Some("b")),
            Err(KeyError::Conflicting)
        );
        assert_eq!(key_from_headers(Some(""), Some("b")), Err(KeyError::Empty));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Header values: mostly key-ish characters, with the ones that matter
        /// to the parser (quotes, commas, blanks, non-ASCII) mixed in.
        fn header_value() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9_.:~+/=\\-]{0,300}",
                "[ \t\",]{0,3}[A-Za-z0-9\"',; \t=é🔑\u{0}\u{7f}]{0,1000}[ \t\",]{0,3}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn parse_never_panics_and_accepts_only_the_contract(raw in header_value()) {
                if let Ok(key) = IdempotencyKey::parse(&raw) {
                    let k = key.as_str();
                    prop_assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
                    prop_assert!(k.chars().all(allowed));
                    // Parsing is idempotent, and the quoted form names the same key.
                    prop_assert_eq!(IdempotencyKey::parse(k), Ok(key.clone()));
                    prop_assert_eq!(IdempotencyKey::parse(&format!("\"{k}\"")), Ok(key.clone()));
                }
            }

            #[test]
            fn valid_keys_always_parse(key in "[A-Za-z0-9_.:~+/=\\-]{1,255}") {
                let parsed = IdempotencyKey::parse(&key);
                prop_assert_eq!(parsed.as_ref().map(|k| k.as_str()), Ok(key.as_str()));
            }

            #[test]
            fn key_from_headers_never_panics_and_is_symmetric(
                a in proptest::option::of(header_value()),
                b in proptest::option::of(header_value()),
            ) {
                let ab = key_from_headers(a.as_deref(), b.as_deref());
                let ba = key_from_headers(b.as_deref(), a.as_deref());
                match (&ab, &ba) {
                    (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(false, "asymmetric: {:?} vs {:?}", ab, ba),
                }
                if let (Some(v), None) = (&a, &b) {
                    prop_assert_eq!(ab, IdempotencyKey::parse(v).map(Some));
                }
            }
        }
    }
}
